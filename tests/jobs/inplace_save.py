"""A job that saves in place, non-atomically: a kill inside a save leaves a torn checkpoint.

Imitates the torn-file bug ``spotsim verify`` finds in Keras ``.h5`` saves, in torch DCP and in any
save that overwrites its one checkpoint piece by piece where it lies. On ``file://`` it
rewrites ``checkpoint.bin`` (a header with the step and the payload's sha256, then each array),
fsyncing and pausing SAVE_SLOW seconds after each piece; on ``gs://`` it overwrites ``shard-0.npy``
… ``shard-3.npy`` one by one, then ``meta.json`` (step and each shard's sha256). A resume validates
the checksums, as DCP or h5py would, and raises on a torn checkpoint (traceback, exit 1).

Verdict: ``spotsim verify`` must FAIL it (resume crashes on a torn checkpoint) when a kill lands
inside a save; a run whose kills all miss the saves resumes bit-exactly.

Env: SPOTSIM_CHECKPOINT_URI, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR,
SPOTSIM_CHECKPOINT_INTERVAL_STEPS / SPOTSIM_CHECKPOINT_INTERVAL (default every 25 steps),
STORAGE_EMULATOR_HOST, TOTAL_STEPS (200), STEP_SLEEP (0.01), SAVE_SLOW (0.02 s per piece).
"""

import hashlib
import io
import json
import os
import struct
import sys
import time

import _jobkit as kit
import numpy as np

KEYS, MAGIC, SLOW = ("w", "b", "vw", "vb"), b"NPCKPT01", kit.env_float("SAVE_SLOW", 0.02)


def save_file(path: str, state: dict, step: int) -> int:
    pieces = [np.ascontiguousarray(state[k]).tobytes() for k in KEYS]
    header = MAGIC + struct.pack("<q32s", step, hashlib.sha256(b"".join(pieces)).digest())
    with open(path, "r+b" if os.path.exists(path) else "wb") as f:  # the bug: no temp file + rename
        for piece in (header, *pieces):
            f.write(piece)
            f.flush()
            os.fsync(f.fileno())
            time.sleep(SLOW)
        f.truncate()
    return len(header) + sum(map(len, pieces))


def load_file(path: str) -> tuple[dict, int] | None:
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < len(MAGIC) + 40 or data[: len(MAGIC)] != MAGIC:
        raise ValueError(f"corrupt checkpoint {path}: no valid header ({len(data)} bytes)")
    step, digest = struct.unpack_from("<q32s", data, len(MAGIC))
    payload, template = data[len(MAGIC) + 40 :], kit.init_state()
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError(f"corrupt checkpoint {path}: payload does not match its header (step {step})")
    state, offset = {}, 0
    for k in KEYS:
        n = template[k].nbytes
        state[k] = np.frombuffer(payload[offset : offset + n]).reshape(template[k].shape).copy()
        offset += n
    return state, step


def save_gcs(store: kit.Store, state: dict, step: int) -> int:
    shards = []
    for i, k in enumerate(KEYS):  # each upload is atomic, the set of them is not
        buf = io.BytesIO()
        np.save(buf, state[k])
        shards.append(buf.getvalue())
        store.put(f"shard-{i}.npy", shards[-1])
        time.sleep(SLOW)
    meta = {"step": step, "sha256": [hashlib.sha256(shard).hexdigest() for shard in shards]}
    store.put("meta.json", json.dumps(meta).encode())
    return sum(map(len, shards))


def load_gcs(store: kit.Store) -> tuple[dict, int] | None:
    if (meta := store.get("meta.json")) is None:
        return None
    meta, state = json.loads(meta), {}
    for i, k in enumerate(KEYS):
        shard = store.get(f"shard-{i}.npy") or b""
        if hashlib.sha256(shard).hexdigest() != meta["sha256"][i]:
            raise ValueError(f"corrupt checkpoint: shard-{i}.npy does not match meta.json (step {meta['step']})")
        state[k] = np.load(io.BytesIO(shard), allow_pickle=False)
    return state, meta["step"]


def main() -> int:
    store, total, policy = kit.Store.from_env(), kit.env_int("TOTAL_STEPS", 200), kit.Policy()
    path = os.path.join(store.dir, "checkpoint.bin") if store.scheme == "file" else None
    restored = load_file(path) if path else load_gcs(store)
    state, step = restored or (kit.init_state(), 0)
    kit.emit("start", attempt=kit.attempt(), resumed_step=step if restored else None)
    while step < total:
        step += 1
        kit.train_step(state, step)
        kit.emit("step", step=step)
        if step == total or policy.due(step):
            t0 = time.monotonic()
            size = save_file(path, state, step) if path else save_gcs(store, state, step)
            elapsed = time.monotonic() - t0
            kind = "final" if step == total else "periodic"
            kit.emit("checkpoint", step=step, kind=kind, blocking_s=elapsed, persist_s=elapsed, bytes=size)
            policy.saved()
    kit.write_output(state)
    kit.emit("done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
