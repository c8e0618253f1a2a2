"""Shared plumbing for the hand-written fixture jobs in this folder (none of them imports spotsim).

- :func:`emit` appends one contract event to ``$SPOTSIM_EVENTS``.
- :func:`init_state` / :func:`train_step`: a tiny softmax regression trained with momentum SGD on
  synthetic data; the batch of step ``n`` is a pure function of ``n``, so a correct resume is bit-exact.
- :class:`Store`: whole objects at ``SPOTSIM_CHECKPOINT_URI``, ``file://`` (temp file, fsync,
  ``os.replace``) or ``gs://`` (one upload per object, plain google-cloud-storage).
- :class:`Policy`: when a periodic checkpoint is due, from the contract's interval variables.
"""

import io
import json
import os
import time
from urllib.parse import urlparse

import numpy as np

DIM, CLASSES, BATCH, LR, MOMENTUM = 16, 4, 32, 0.1, 0.9
_TRUE_W = np.random.default_rng(12345).normal(size=(DIM, CLASSES))


def emit(event: str, **fields) -> None:
    """Append one event line (one write, append mode) to ``$SPOTSIM_EVENTS`` if it is set."""
    if path := os.environ.get("SPOTSIM_EVENTS"):
        with open(path, "a") as f:
            f.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def attempt() -> int:
    return env_int("SPOTSIM_ATTEMPT", 0)


def init_state() -> dict:
    """Weights, bias and their momentum buffers, the same in every process."""
    w = np.random.default_rng(0).normal(0.0, 0.1, size=(DIM, CLASSES))
    return {"w": w, "b": np.zeros(CLASSES), "vw": np.zeros_like(w), "vb": np.zeros(CLASSES)}


def train_step(state: dict, step: int) -> None:
    """Run optimizer step number ``step`` (1-based) on its own batch; updates ``state`` in place."""
    rng = np.random.default_rng(step)
    x = rng.normal(size=(BATCH, DIM))
    y = np.argmax(x @ _TRUE_W + rng.normal(0.0, 0.5, size=(BATCH, CLASSES)), axis=1)
    logits = x @ state["w"] + state["b"]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(BATCH), y] -= 1.0
    state["vw"] = MOMENTUM * state["vw"] + x.T @ p / BATCH
    state["vb"] = MOMENTUM * state["vb"] + p.mean(axis=0)
    state["w"] = state["w"] - LR * state["vw"]
    state["b"] = state["b"] - LR * state["vb"]
    time.sleep(env_float("STEP_SLEEP", 0.01))


def pack(state: dict, **scalars) -> bytes:
    """The state (plus integer scalars such as ``step``) as ``.npz`` bytes."""
    buf = io.BytesIO()
    np.savez(buf, **state, **{k: np.int64(v) for k, v in scalars.items()})
    return buf.getvalue()


def unpack(data: bytes) -> tuple[dict, dict]:
    """Inverse of :func:`pack`: ``(state, scalars)``."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        state = {k: z[k] for k in ("w", "b", "vw", "vb")}
        return state, {k: int(z[k]) for k in z.files if k not in state}


def write_output(state: dict, name: str = "model.npz") -> None:
    """The trained model to ``$SPOTSIM_OUTPUT_DIR/model.npz`` (temp file, then ``os.replace``)."""
    out = os.environ.get("SPOTSIM_OUTPUT_DIR") or "."
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, f".{name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, w=state["w"], b=state["b"])
    os.replace(tmp, os.path.join(out, name))


def gcs_bucket(name: str):
    """A bucket handle from plain google-cloud-storage (anonymous on an emulator)."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="test", credentials=AnonymousCredentials()).bucket(name)
    return storage.Client().bucket(name)


class Store:
    """Named whole objects under a ``file://`` directory or a ``gs://bucket/prefix``."""

    def __init__(self, uri: str) -> None:
        parsed = urlparse(uri)
        self.scheme = parsed.scheme
        if self.scheme == "file":
            self.dir = parsed.path
            os.makedirs(self.dir, exist_ok=True)
        elif self.scheme == "gs":
            self.bucket = gcs_bucket(parsed.netloc)
            self.prefix = parsed.path.strip("/") + "/" if parsed.path.strip("/") else ""
        else:
            raise SystemExit(f"unsupported checkpoint URI {uri!r}: use file:///abs/dir or gs://bucket/prefix")

    @classmethod
    def from_env(cls) -> "Store":
        return cls(os.environ["SPOTSIM_CHECKPOINT_URI"])

    def put(self, name: str, data: bytes) -> None:
        """Make ``name`` hold ``data``, all or nothing."""
        if self.scheme == "gs":
            self.bucket.blob(self.prefix + name).upload_from_string(data)
            return
        tmp = os.path.join(self.dir, f".{name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.dir, name))
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def get(self, name: str) -> bytes | None:
        if self.scheme == "gs":
            blob = self.bucket.blob(self.prefix + name)
            return blob.download_as_bytes() if blob.exists() else None
        path = os.path.join(self.dir, name)
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return f.read()

    def names(self) -> list[str]:
        if self.scheme == "gs":
            return [b.name[len(self.prefix) :] for b in self.bucket.list_blobs(prefix=self.prefix)]
        return [n for n in os.listdir(self.dir) if not n.startswith(".")]

    def delete(self, name: str) -> None:
        if self.scheme == "gs":
            self.bucket.blob(self.prefix + name).delete()
        else:
            os.remove(os.path.join(self.dir, name))


def checkpoint_steps(store: Store) -> list[int]:
    """Steps of the ``ckpt-<step>.npz`` objects in ``store``, ascending."""
    names = (n for n in store.names() if n.startswith("ckpt-") and n.endswith(".npz"))
    return sorted(int(n[len("ckpt-") : -len(".npz")]) for n in names)


def restore_latest(store: Store) -> tuple[dict, int] | None:
    """``(state, step)`` from the highest ``ckpt-<step>.npz``, or None when there is none."""
    if not (steps := checkpoint_steps(store)):
        return None
    state, scalars = unpack(store.get(f"ckpt-{steps[-1]}.npz"))
    return state, scalars["step"]


def save_checkpoint(store: Store, name: str, state: dict, step: int, kind: str, **scalars) -> None:
    """Put ``state`` (with ``step``) at ``name`` whole; only then emit its ``checkpoint`` event."""
    t0 = time.monotonic()
    data = pack(state, step=step, **scalars)
    store.put(name, data)
    elapsed = time.monotonic() - t0
    emit("checkpoint", step=step, kind=kind, blocking_s=elapsed, persist_s=elapsed, bytes=len(data))


class Policy:
    """When a periodic checkpoint is due: every ``SPOTSIM_CHECKPOINT_INTERVAL_STEPS`` steps if set,
    else every ``SPOTSIM_CHECKPOINT_INTERVAL`` real seconds if set, else every ``default_steps``."""

    def __init__(self, default_steps: int = 25) -> None:
        self.every_steps = env_int("SPOTSIM_CHECKPOINT_INTERVAL_STEPS", 0)
        self.every_s = env_float("SPOTSIM_CHECKPOINT_INTERVAL", 0.0) if not self.every_steps else 0.0
        if not (self.every_steps or self.every_s):
            self.every_steps = default_steps
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        if self.every_steps:
            return step % self.every_steps == 0
        return time.monotonic() - self.last >= self.every_s

    def saved(self) -> None:
        self.last = time.monotonic()
