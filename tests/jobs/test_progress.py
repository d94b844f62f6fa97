"""Progress-line parsing and the rate limiter (fake clock + hypothesis properties)."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from fsm_worker.jobs.progress import (
    MAX_MESSAGE_CHARS,
    MAX_METRICS,
    ErrorLine,
    ProgressLine,
    RateLimiter,
    ResultLine,
    parse_line,
)


def test_parse_progress_result_error() -> None:
    line = b'{"event":"progress","progress":0.35,"message":"epoch 7/20","metrics":{"loss":0.41,"epoch":7}}\n'
    assert parse_line(line) == ProgressLine(0.35, "epoch 7/20", {"loss": 0.41, "epoch": 7})
    assert parse_line('{"event":"result","model_file":"model.npz"}') == ResultLine("model.npz", {})
    assert parse_line('{"event":"result"}') == ResultLine(None, {})
    assert parse_line('{"event":"error","code":"INPUT_INVALID","message":"x"}') == ErrorLine(
        "INPUT_INVALID", "x"
    )


def test_parse_rejects_what_is_not_a_channel_line() -> None:
    lines: list[str | bytes] = [
        "plain text",
        "{not json",
        "[1, 2]",
        '{"event":"other"}',
        '{"event":"progress"}',
        '{"event":"progress","progress":true}',
        '{"event":"progress","progress":"0.5"}',
        '{"event":"progress","progress":NaN}',
        '{"event":"progress","progress":0.5,"message":3}',
        '{"event":"progress","progress":0.5,"metrics":[1]}',
        '{"event":"progress","progress":0.5,"metrics":{"a":{"nested":1}}}',
        '{"event":"result","model_file":7}',
        '{"event":"error","message":"no code"}',
        b"\xff\xfe garbage",
    ]
    for raw in lines:
        assert parse_line(raw) is None, raw


def test_parse_bounds_message_and_metrics() -> None:
    metrics = {f"m{i}": i for i in range(100)}
    line = json.dumps({"event": "progress", "progress": 0.5, "message": "x" * 5000, "metrics": metrics})
    parsed = parse_line(line)
    assert isinstance(parsed, ProgressLine)
    assert len(parsed.message) == MAX_MESSAGE_CHARS and len(parsed.metrics) == MAX_METRICS


def test_limiter_with_fake_clock() -> None:
    lim: RateLimiter[str] = RateLimiter(0.25)
    assert lim.deadline is None
    assert lim.offer("a", now=10.0) == "a"  # first is immediate
    assert lim.offer("b", now=10.1) is None
    assert lim.offer("c", now=10.2) is None  # replaces b
    assert lim.deadline == 10.25
    assert lim.due(10.24) is None
    assert lim.due(10.25) == "c"
    assert lim.deadline is None and lim.due(11.0) is None
    assert lim.offer("d", now=10.3) is None
    assert lim.offer("e", now=10.6) == "e"  # interval passed since c: immediate, d superseded
    assert lim.flush() is None
    assert lim.offer("f", now=10.61) is None
    assert lim.flush() == "f" and lim.flush() is None


steps = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=0.5, allow_nan=False), st.booleans()),
    min_size=1,
    max_size=60,
)


@settings(deadline=None, max_examples=300)
@given(steps=steps, interval=st.floats(min_value=0.01, max_value=1.0))
def test_limiter_properties(steps: list[tuple[float, bool]], interval: float) -> None:
    """Deliveries (before the final flush) are >= interval apart, in offer order, and the last survives."""
    lim: RateLimiter[int] = RateLimiter(interval)
    now, offered, delivered, times = 0.0, 0, [], []
    for dt, is_offer in steps:
        now += dt
        if lim.deadline is not None and lim.deadline <= now:
            # the shell's timer fires at the deadline, before later input is handled
            at = lim.deadline
            item = lim.due(at)
            assert item is not None
            delivered.append(item)
            times.append(at)
        if is_offer:
            offered += 1
            out = lim.offer(offered, now)
        else:
            out = lim.due(now)
        if out is not None:
            delivered.append(out)
            times.append(now)
    assert all(b - a >= interval - 1e-9 for a, b in itertools.pairwise(times))
    last = lim.flush()
    if last is not None:
        delivered.append(last)
    assert delivered == sorted(set(delivered))  # in order, no duplicates
    if offered:
        assert delivered[0] == 1 and delivered[-1] == offered  # first and last never dropped
    else:
        assert delivered == []
