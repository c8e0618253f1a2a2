"""Local cloud metadata servers, one per run, and the clients that watch them.

:class:`MetadataServer` speaks one cloud's metadata protocol on loopback (GCE ``/computeMetadata/v1``, AWS IMDS
``/latest/meta-data``, Azure Scheduled Events) and announces the harness's preemptions the way that cloud does;
:mod:`spotsim.metadata.clients` is what :class:`~spotsim.checkpoint.PreemptionWatcher` polls it with.
"""

from spotsim.metadata.base import MetadataRequest
from spotsim.metadata.server import CLOUDS, MetadataServer

__all__ = ["CLOUDS", "MetadataRequest", "MetadataServer"]
