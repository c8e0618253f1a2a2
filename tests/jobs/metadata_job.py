"""A job that learns of its preemption only from the cloud's metadata server, by polling it.

It installs no SIGTERM handler: a signal kills it. A watcher thread uses only the standard library and
the variables the cloud clients read:

- ``CLOUD=gce``: long-polls ``instance/preempted?wait_for_change=true`` at ``$GCE_METADATA_HOST``.
- ``CLOUD=aws``: IMDSv2 (token PUT) at ``$AWS_EC2_METADATA_SERVICE_ENDPOINT``, polling
  ``spot/instance-action`` every ``POLL_S`` (0.1) seconds; every answer is recorded.
- ``CLOUD=azure``: polls Scheduled Events at ``$SPOTSIM_METADATA_URL`` every ``POLL_S`` seconds; with
  ``APPROVE=1`` it approves the Preempt event (``StartRequests``) once its emergency checkpoint is saved,
  then waits to be evicted.

On the notice the loop saves an ``emergency`` checkpoint at the true step and exits 0 (Azure with
APPROVE: waits for the eviction instead). What it saw goes to ``$SPOTSIM_OUTPUT_DIR/seen-<attempt>.json``.

Env: SPOTSIM_CHECKPOINT_URI, SPOTSIM_EVENTS, SPOTSIM_ATTEMPT, SPOTSIM_OUTPUT_DIR, TOTAL_STEPS (300),
STEP_SLEEP (0.01), CLOUD, POLL_S, APPROVE.
"""

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

import _jobkit as kit

notice = threading.Event()
seen: list[dict] = []  # every answer the watcher got, with the time it got it
event_id: list[str] = []


def fetch(url: str, headers: dict, method: str = "GET", body: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def watch_gce() -> None:
    url = f"http://{os.environ['GCE_METADATA_HOST']}/computeMetadata/v1/instance/preempted"
    status, value = fetch(url, {"Metadata-Flavor": "Google"})
    while value.strip() != "TRUE":
        status, value = fetch(url + "?wait_for_change=true", {"Metadata-Flavor": "Google"})
        seen.append({"t": time.time(), "status": status, "body": value})
    notice.set()


def watch_aws() -> None:
    base = os.environ["AWS_EC2_METADATA_SERVICE_ENDPOINT"].rstrip("/")
    _, token = fetch(f"{base}/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}, "PUT")
    while True:
        status, body = fetch(f"{base}/latest/meta-data/spot/instance-action", {"X-aws-ec2-metadata-token": token})
        seen.append({"t": time.time(), "status": status, "body": body})
        if status == 200:
            notice.set()  # keep polling: the deadline must not move
        time.sleep(kit.env_float("POLL_S", 0.1))


def watch_azure() -> None:
    url = os.environ["SPOTSIM_METADATA_URL"].rstrip("/") + "/metadata/scheduledevents?api-version=2020-07-01"
    while not notice.is_set():
        status, body = fetch(url, {"Metadata": "true"})
        seen.append({"t": time.time(), "status": status, "body": body})
        preempts = [e for e in json.loads(body)["Events"] if e["EventType"] == "Preempt"] if status == 200 else []
        if preempts:
            event_id.append(preempts[0]["EventId"])
            notice.set()
        time.sleep(kit.env_float("POLL_S", 0.1))


def approve() -> None:
    url = os.environ["SPOTSIM_METADATA_URL"].rstrip("/") + "/metadata/scheduledevents?api-version=2020-07-01"
    body = json.dumps({"StartRequests": [{"EventId": event_id[0]}]}).encode()
    status, _ = fetch(url, {"Metadata": "true", "Content-Type": "application/json"}, "POST", body)
    seen.append({"t": time.time(), "approved": status})


def record() -> None:
    out = os.environ.get("SPOTSIM_OUTPUT_DIR") or "."
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"seen-{kit.attempt()}.json"), "w") as f:
        json.dump(list(seen), f)


def main() -> int:
    cloud = os.environ["CLOUD"]
    threading.Thread(target={"gce": watch_gce, "aws": watch_aws, "azure": watch_azure}[cloud], daemon=True).start()
    store, total, policy = kit.Store.from_env(), kit.env_int("TOTAL_STEPS", 300), kit.Policy()
    restored = kit.restore_latest(store)
    state, step = restored or (kit.init_state(), 0)
    kit.emit("start", attempt=kit.attempt(), resumed_step=step if restored else None)
    while step < total:
        step += 1
        kit.train_step(state, step)
        kit.emit("step", step=step)
        if notice.is_set():
            kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, "emergency")
            if cloud == "aws":
                time.sleep(3 * kit.env_float("POLL_S", 0.1))  # a few more polls: the deadline must not move
            if cloud == "azure" and os.environ.get("APPROVE") == "1":
                approve()
                record()
                time.sleep(600)  # the eviction comes now, not at NotBefore
            record()
            return 0
        if step < total and policy.due(step):
            kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, "periodic")
            policy.saved()
    kit.save_checkpoint(store, f"ckpt-{step}.npz", state, step, "final")
    kit.write_output(state)
    record()
    kit.emit("done", step=step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
