"""The live display and the summary read the same run log: they must agree on the steps lost.

The live tail (:class:`~spotsim.harness.runlog.RunLogTail`) counts lost work event by event as a run goes;
the summary folds the finished log into attempts and charges each interruption. Hypothesis draws run logs
of any shape the harness can write (attempts killed before they start, resumes from the last durable
checkpoint, a last attempt that never resumes) and both readings must give the same total.
"""

from __future__ import annotations

from itertools import count

from hypothesis import given, settings
from hypothesis import strategies as st
from test_summary import summarize_log

from spotsim.harness.runlog import RunLogTail

INTERRUPTED = st.sampled_from(["preempted", "crash"])


@st.composite
def attempt(draw, number: int, durable: int, last: bool) -> tuple[str, list[tuple[str, dict]], int]:
    """(cause, job events, durable step after it) for one attempt that resumes from ``durable``."""
    started = last or draw(st.booleans()) or number == 0
    cause = "done" if last and draw(st.booleans()) else draw(INTERRUPTED)
    if not started:
        return cause, [], durable
    resumed = durable or None
    body = [("start", {"attempt": number, "resumed_step": resumed}), ("step", {"step": durable})]
    step = durable
    for grown in draw(st.lists(st.integers(1, 50), max_size=6)):
        step += grown
        body.append(("step", {"step": step}))
        if draw(st.booleans()):
            body.append(("checkpoint", {"step": step, "kind": "periodic", "blocking_s": 0.01}))
            durable = step
    if cause == "done":
        body.append(("done", {"step": step}))
    return cause, body, durable


@st.composite
def run_log(draw) -> list[dict]:
    clock = count()
    events: list[dict] = []
    durable = 0
    attempts = draw(st.integers(1, 6))
    for number in range(attempts):
        cause, body, durable = draw(attempt(number, durable, last=number == attempts - 1))
        events.append({"t": next(clock), "event": "launch", "attempt": number, "preempt_at_s": None})
        events += [{"t": next(clock), "event": name, **fields} for name, fields in body]
        exit_code = 0 if cause == "done" else -9
        events.append({"t": next(clock), "event": "exit", "attempt": number, "exit_code": exit_code, "cause": cause})
    return events


@settings(max_examples=200, deadline=None)
@given(run_log())
def test_the_live_tail_and_the_summary_agree_on_lost_steps(events):
    tail = RunLogTail()
    for event in events:
        tail.apply(event)
    assert tail.lost_steps == summarize_log(events).accounting.lost_steps
