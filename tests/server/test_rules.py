"""Pure rules: the identity decision, discovery filters and input validation (no sockets)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal
from fsm_worker.protocol.signaling import check_json, merge_metadata, parse_auth, room_for_token
from fsm_worker.server.filters import Filters, parse_filters
from fsm_worker.server.registry import ClaimKind, SessionRecord, decide_claim

LIVE = SessionRecord(sid="s1", node="n1", role="worker", secret_hash="h")
GONE = SessionRecord(sid="s1", node="n1", role="worker", secret_hash="h", connected=False, since=100.0)


@pytest.mark.parametrize(
    ("existing", "presented", "now", "alive", "seen", "kind", "code"),
    [
        (None, None, 0, True, None, ClaimKind.NEW, None),
        (None, "x", 0, True, None, ClaimKind.NEW, None),
        (LIVE, "h", 0, True, None, ClaimKind.RESUME, None),
        (LIVE, None, 0, True, None, ClaimKind.REFUSED, SignalingCode.PEER_ID_TAKEN),
        (LIVE, "wrong", 0, True, None, ClaimKind.REFUSED, SignalingCode.PEER_ID_TAKEN),
        (GONE, "h", 101, True, None, ClaimKind.RESUME, None),
        (GONE, None, 101, True, None, ClaimKind.REFUSED, SignalingCode.PEER_ID_RESERVED),
        (GONE, None, 131, True, None, ClaimKind.NEW, None),
        # holder's node died at its last heartbeat (t=100): grace counts from there
        (LIVE, None, 110, False, 100.0, ClaimKind.REFUSED, SignalingCode.PEER_ID_RESERVED),
        (LIVE, None, 131, False, 100.0, ClaimKind.NEW, None),
        (LIVE, None, 5, False, None, ClaimKind.NEW, None),
    ],
)
def test_decide_claim(
    existing: SessionRecord | None,
    presented: str | None,
    now: float,
    alive: bool,
    seen: float | None,
    kind: ClaimKind,
    code: SignalingCode | None,
) -> None:
    decision = decide_claim(existing, presented, now=now, grace=30, holder_alive=alive, node_last_seen=seen)
    assert (decision.kind, decision.code) == (kind, code)


def test_resume_of_live_socket_names_the_socket_to_drop() -> None:
    decision = decide_claim(LIVE, "h", now=0, grace=30, holder_alive=True, node_last_seen=None)
    assert (decision.replaced_sid, decision.replaced_node) == ("s1", "n1")


def test_filters_match() -> None:
    md: dict[str, Any] = {"tags": ["a", "b"], "properties": {"status": "available", "mem": 8192, "ok": True}}
    assert Filters().matches("worker", md)
    assert not Filters(role="client").matches("worker", md)
    assert Filters(tags=("z", "b")).matches("worker", md)
    assert not Filters(tags=()).matches("worker", md)
    assert Filters(properties={"mem": {"$gte": 8192, "$lte": 8192}}).matches("worker", md)
    assert Filters(properties={"mem": 8192.0}).matches("worker", md)
    assert not Filters(properties={"ok": 1}).matches("worker", md)  # a bool is not a number
    assert not Filters(properties={"status": {"$gte": 1}}).matches("worker", md)
    assert not Filters(properties={"mem": 1}).matches("worker", {"properties": "broken"})


@given(st.integers(-(10**6), 10**6), st.integers(-(10**6), 10**6))
def test_gte_lte_agree_with_python(value: int, bound: int) -> None:
    md = {"properties": {"v": value}}
    assert Filters(properties={"v": {"$gte": bound}}).matches("worker", md) == (value >= bound)
    assert Filters(properties={"v": {"$lte": bound}}).matches("worker", md) == (value <= bound)


def test_parse_filters_accepts_missing_or_null() -> None:
    assert parse_filters(({},), max_bytes=1000) == Filters()
    assert parse_filters(({"filters": None},), max_bytes=1000) == Filters()


def test_merge_metadata() -> None:
    current = {"tags": ["a"], "properties": {"x": 1, "y": 2}}
    update = {"tags": ["b"], "properties": {"x": None, "z": 3}}
    assert merge_metadata(current, update) == {"tags": ["b"], "properties": {"y": 2, "z": 3}}
    assert merge_metadata(current, {"tags": None}) == {"properties": {"x": 1, "y": 2}}


def test_check_json_limits() -> None:
    check_json({"a": [1, {"b": 2}]}, what="x", max_bytes=100)
    with pytest.raises(SignalingRefusal) as info:
        check_json({"a": "x" * 200}, what="x", max_bytes=100)
    assert info.value.code is SignalingCode.PAYLOAD_TOO_LARGE


def test_auth_and_rooms() -> None:
    auth = parse_auth({"token": "t", "peer_id": "w-1", "role": "worker"}, max_bytes=1000)
    assert (auth.metadata, auth.resume_secret) == ({}, None)
    assert room_for_token("t") != "t" and len(room_for_token("t")) == 64
