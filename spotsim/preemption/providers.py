"""Provider profiles: how each cloud announces a preemption and carries it out (``--provider``).

A preemption starts at t0, when the schedule says the VM's time is up. From
there each cloud follows its own timeline, all in simulated seconds after t0.
Sources: Compute Engine's Spot VM and metadata docs and the
``Scheduling.skipGuestOsShutdown`` reference (30 s for Spot), GKE's graceful
node shutdown (15 s for pods), the EC2 user guide's spot-instance-termination-
notices and rebalance-recommendations pages, and Azure's scheduled-events and
spot-vms pages. GCP's optional 120 s notice (Beta ``preemptionNoticeDuration``)
is quoted by provider SDK references, not confirmed on the primary page.

===================  =====================================  ==============  =====================
profile              metadata at t0                         SIGTERM         SIGKILL after SIGTERM
===================  =====================================  ==============  =====================
``gcp-spot``         ``instance/preempted`` TRUE            t0 (+ notice)   30 s
``gcp-preemptible``  as gcp-spot; also stopped at 24 h up   t0 (+ notice)   30 s
``gke``              as gcp-spot                            t0 (+ notice)   15 s
``aws-spot``         ``spot/instance-action``, time t0+120  t0 + 120 s      30 s (assumed)
``azure-spot``       Scheduled Events ``Preempt``, +30 s    t0 + 30 s       0 s (assumed)
===================  =====================================  ==============  =====================

``notice_s`` is the metadata-only lead (``--notice``), ``grace_s`` the
SIGTERM → SIGKILL window (``--grace``). AWS's SIGTERM comes from the OS
shutdown when the instance stops, and the gap to SIGKILL depends on the
image's init system: 30 s is an assumption. Azure evicts at ``NotBefore``; that
the guest gets no shutdown window is an assumption too. An Azure VM may approve
the event early (``StartRequests``), which brings the eviction forward.

A ``--kill sigkill`` preemption has no timeline: no metadata, SIGKILL at t0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from spotsim.errors import InvalidOption

HOUR = 3600.0


@dataclass(frozen=True)
class Provider:
    """One cloud's preemption timeline; every duration in simulated seconds."""

    name: str
    cloud: str  # whose metadata server the job sees: "gce", "aws" or "azure"
    notice_s: float = 0.0  # t0 → SIGTERM: the metadata notice alone
    grace_s: float = 30.0  # SIGTERM → SIGKILL
    max_uptime_s: float | None = None  # a hard stop at this much VM uptime, whatever the schedule says
    rebalance_lead_s: float | None = None  # AWS: a rebalance recommendation this long before t0
    approvable: bool = False  # Azure: the VM may approve the eviction early
    assumptions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for option, value in (("--notice", self.notice_s), ("--grace", self.grace_s)):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidOption(f"{option} must be a duration ≥ 0, got {value:g}")
        lead = self.rebalance_lead_s
        if lead is not None and not (math.isfinite(lead) and lead >= 0):
            raise InvalidOption(f"--rebalance-lead must be a duration ≥ 0, got {lead:g}")

    def with_overrides(
        self, *, notice_s: float | None = None, grace_s: float | None = None, rebalance_lead_s: float | None = None
    ) -> Provider:
        """This profile with the user's ``--notice``, ``--grace`` and ``--rebalance-lead``."""
        if rebalance_lead_s is not None and self.rebalance_lead_s is None:
            raise InvalidOption(f"--rebalance-lead is for aws-spot; {self.name} sends no rebalance recommendation")
        return replace(
            self,
            notice_s=self.notice_s if notice_s is None else notice_s,
            grace_s=self.grace_s if grace_s is None else grace_s,
            rebalance_lead_s=self.rebalance_lead_s if rebalance_lead_s is None else rebalance_lead_s,
        )

    def describe(self) -> str:
        """The timeline in one line, for the summary and the timeline's title."""
        parts = [self.name]
        if self.notice_s:
            parts.append(f"notice {self.notice_s:g}s")
        parts.append(f"grace {self.grace_s:g}s")
        if self.max_uptime_s is not None:
            parts.append(f"stop at {self.max_uptime_s / HOUR:g} h up")
        if self.rebalance_lead_s:
            parts.append(f"rebalance {self.rebalance_lead_s:g}s ahead")
        return " · ".join(parts)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "cloud": self.cloud,
            "notice_s": self.notice_s,
            "grace_s": self.grace_s,
            "max_uptime_s": self.max_uptime_s,
            "rebalance_lead_s": self.rebalance_lead_s,
            "approvable": self.approvable,
            "assumptions": list(self.assumptions),
        }


PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider("gcp-spot", "gce"),
        Provider(
            "gcp-preemptible",
            "gce",
            max_uptime_s=24 * HOUR,
            assumptions=("the 24 h stop is announced like any preemption: preempted TRUE, SIGTERM, SIGKILL",),
        ),
        Provider("gke", "gce", grace_s=15.0),
        Provider(
            "aws-spot",
            "aws",
            notice_s=120.0,
            rebalance_lead_s=0.0,
            assumptions=("SIGTERM → SIGKILL at the stop is 30 s: the OS shutdown's grace depends on the image",),
        ),
        Provider(
            "azure-spot",
            "azure",
            notice_s=30.0,
            grace_s=0.0,
            approvable=True,
            assumptions=("the eviction at NotBefore gives the guest no shutdown window (SIGTERM, then SIGKILL)",),
        ),
    )
}
DEFAULT_PROVIDER = "gcp-spot"


def parse_provider(
    name: str, *, notice_s: float | None = None, grace_s: float | None = None, rebalance_lead_s: float | None = None
) -> Provider:
    """The profile named ``name``, with the user's overrides.

    Raises:
        InvalidOption: an unknown name, or an override the profile has no use for.
    """
    profile = PROVIDERS.get(name)
    if profile is None:
        raise InvalidOption(f"unknown --provider {name!r}; use one of {', '.join(PROVIDERS)}")
    return profile.with_overrides(notice_s=notice_s, grace_s=grace_s, rebalance_lead_s=rebalance_lead_s)
