"""Pure rules behind the server's limits and identity (no sockets): buckets, admission, lineages, pages."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsm_worker.protocol.errors import SignalingCode, SignalingRefusal
from fsm_worker.protocol.signaling import parse_auth
from fsm_worker.server.discovery import page, parse_discovery
from fsm_worker.server.limits import Admission, NoticeLog, ReplyCredits, TokenBucket
from fsm_worker.server.registry import ClaimKind, PeerView, SessionRecord, decide_claim, lost_id
from fsm_worker.server.resume import Lineage, ResumeSigner, load_key, secret_wins


def test_token_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.1) and not bucket.take(0.1)  # one token per 1/rate seconds
    assert sum(bucket.take(10.0) for _ in range(100)) == 5  # refills up to the burst, never beyond


@given(st.lists(st.floats(0, 0.05), min_size=1, max_size=300))
def test_token_bucket_never_exceeds_burst_plus_rate_times_time(gaps: list[float]) -> None:
    bucket, now, taken = TokenBucket(rate=20, burst=7), 0.0, 0
    for gap in gaps:
        now += gap
        taken += bucket.take(now)
    assert taken <= 7 + 20 * now + 1e-9


def test_after_a_refusal_the_hold_lasts_until_a_batch_of_tokens_is_back() -> None:
    bucket = TokenBucket(rate=200, burst=400)
    for _ in range(400):
        assert bucket.take(0.0)
    assert not bucket.take(0.0)
    hold = bucket.hold(0.05)  # 10 tokens' worth at 200/s
    assert hold == pytest.approx(0.05)
    assert [bucket.take(hold) for _ in range(11)] == [True] * 10 + [False]  # one refusal per batch of 10
    full = TokenBucket(rate=20, burst=5)
    assert full.take(0.0) and full.hold(0.05) == 0.0  # tokens there: no hold
    slow = TokenBucket(rate=2, burst=3)
    for _ in range(3):
        slow.take(0.0)
    assert slow.hold(0.05) == pytest.approx(0.5)  # at least one token
    small = TokenBucket(rate=1000, burst=4)
    for _ in range(4):
        small.take(0.0)
    assert small.hold(1.0) == pytest.approx(0.004)  # at most the burst


@given(st.lists(st.floats(0, 0.2), min_size=1, max_size=200), st.floats(0.001, 0.5))
def test_holding_after_refusals_never_lets_more_than_the_bucket_through(
    gaps: list[float], hold: float
) -> None:
    """A sender that waits out every hold gets at most burst + rate x time."""
    bucket, now, taken = TokenBucket(rate=50, burst=20), 0.0, 0
    for gap in gaps:
        now += gap
        if bucket.take(now):
            taken += 1
        else:
            now += bucket.hold(hold)
    assert taken <= 20 + 50 * now + 1e-9


def test_reply_credits_pay_for_one_answer_per_message_received() -> None:
    credits = ReplyCredits(cap=3, max_peers=2)
    assert not credits.spend("flooder")  # nobody asked: the sender pays
    for _ in range(5):
        credits.grant("flooder")
    assert [credits.spend("flooder") for _ in range(4)] == [True, True, True, False]  # capped at 3
    credits.grant("a")
    credits.grant("b")
    credits.grant("c")  # past max_peers: the least recently heard from is forgotten
    assert not credits.spend("a") and credits.spend("b") and credits.spend("c")
    assert credits.credits == {}


def test_a_refund_gives_back_one_token_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=1, burst=2)
    assert bucket.take(0.0) and bucket.take(0.0) and not bucket.take(0.0)
    bucket.refund()
    assert bucket.take(0.0) and not bucket.take(0.0)
    for _ in range(5):
        bucket.refund()
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]


def test_notice_log_logs_first_of_each_kind_then_summaries() -> None:
    notices = NoticeLog(interval=10)
    assert notices.note("bad", 0.0) == (True, None)
    assert notices.note("bad", 1.0) == (False, None)
    assert notices.note("rate", 2.0) == (True, None)
    assert notices.note("bad", 11.0) == (False, {"bad": 2})
    assert notices.due(float("inf")) is None


def test_admission_caps_and_auth_deadline() -> None:
    adm = Admission(max_total=3, max_per_address=2, auth_timeout=5)
    assert adm.open("a", "10.0.0.1", 0) is None and adm.open("b", "10.0.0.1", 1) is None
    refusal = adm.open("c", "10.0.0.1", 2)
    assert refusal is not None and "max_connections_per_address=2" in refusal.message
    assert adm.open("d", "10.0.0.2", 2) is None
    refusal = adm.open("e", "10.0.0.3", 2)
    assert refusal is not None and "max_connections=3" in refusal.message
    adm.authenticated("a")
    assert adm.next_deadline() == 6
    assert adm.expired(5.5) == [] and adm.expired(6) == ["b"] and adm.expired(100) == ["d"]
    adm.close("b")
    assert adm.open("f", "10.0.0.1", 7) is None and len(adm) == 3


def test_secrets_verify_only_for_their_id_and_key() -> None:
    signer = ResumeSigner(b"k" * 32)
    secret = signer.issue("room", "w1", Lineage(12.5, blind=True))
    assert signer.verify("room", "w1", secret) == Lineage(12.5, blind=True)
    assert signer.verify("room", "w2", secret) is None
    assert signer.verify("other", "w1", secret) is None
    assert ResumeSigner(b"x" * 32).verify("room", "w1", secret) is None
    assert signer.verify("room", "w1", secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert signer.verify("room", "w1", "x" * 43) is None
    for last in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        if last != secret[-1]:  # every other last character, also those differing only in unused bits
            assert signer.verify("room", "w1", secret[:-1] + last) is None, last
    parse_auth({"token": "t", "peer_id": "w1", "role": "worker", "resume_secret": secret}, max_bytes=100)


def test_generated_key_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "state" / "resume.key"
    key = load_key(None, str(path))
    assert load_key(None, str(path)) == key and len(key) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key("operator-key", str(path)) == b"operator-key"


BLIND_OLD, BLIND_NEW = Lineage(1.0, True), Lineage(5.0, True)
KNOWN_OLD, KNOWN_NEW = Lineage(2.0, False), Lineage(6.0, False)


@pytest.mark.parametrize(
    ("presented", "held", "wins"),
    [
        (BLIND_OLD, BLIND_NEW, True),  # the id was claimed blind after a restart: the earlier holder wins
        (BLIND_NEW, BLIND_OLD, False),
        (KNOWN_OLD, BLIND_NEW, True),
        (BLIND_OLD, KNOWN_OLD, False),  # a takeover the server witnessed beats a blind lineage
        (KNOWN_NEW, KNOWN_OLD, True),
        (KNOWN_OLD, KNOWN_NEW, False),  # a lineage that was legitimately superseded stays superseded
    ],
)
def test_secret_wins(presented: Lineage, held: Lineage, wins: bool) -> None:
    assert secret_wins(presented, held) is wins


def test_a_verified_secret_takes_an_id_from_a_blind_claimant_even_while_it_is_live() -> None:
    squatter = SessionRecord(sid="s2", node="n", role="worker", secret_hash="h2", epoch=5.0, blind=True)
    decision = decide_claim(
        squatter, "h1", now=6, grace=30, holder_alive=True, node_last_seen=None, presented=BLIND_OLD
    )
    assert (decision.kind, decision.replaced_sid, decision.lineage) == (ClaimKind.RESUME, "s2", BLIND_OLD)
    witnessed = SessionRecord(sid="s3", node="n", role="worker", secret_hash="h3", epoch=6.0, blind=False)
    decision = decide_claim(
        witnessed, "h1", now=7, grace=30, holder_alive=True, node_last_seen=None, presented=BLIND_OLD
    )
    assert decision.code is SignalingCode.PEER_ID_TAKEN
    # with no record a verified secret resumes; without one the claim is blind
    assert decide_claim(None, "h", now=3, grace=30, holder_alive=True, node_last_seen=None,
                        presented=KNOWN_OLD).lineage == KNOWN_OLD  # fmt: skip
    assert decide_claim(None, None, now=3, grace=30, holder_alive=True, node_last_seen=None).lineage == (
        Lineage(3, blind=True)
    )


def test_discovery_pages_cover_everything_once() -> None:
    peers = [
        PeerView(f"p{i:03d}", "worker", {"tags": ["t"], "properties": {"a": i, "b": 1}}) for i in range(23)
    ]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        request = parse_discovery(({"limit": 10, "cursor": cursor} if cursor else {"limit": 10},),
                                  max_bytes=1000, default_limit=5, max_limit=10)  # fmt: skip
        found, cursor = page(peers, request, exclude="p005")
        seen += [p["peer_id"] for p in found]
        if cursor is None:
            break
    assert seen == [p.peer_id for p in peers if p.peer_id != "p005"]
    request = parse_discovery(({"fields": ["properties.a", "tags"]},), max_bytes=1000, default_limit=5,
                              max_limit=10)  # fmt: skip
    found, cursor = page(peers, request, exclude="")
    assert found[0]["metadata"] == {"properties": {"a": 0}, "tags": ["t"]} and cursor == "p004"


@pytest.mark.parametrize(
    "data",
    [{"limit": 0}, {"limit": "5"}, {"limit": True}, {"limit": 11}, {"cursor": 5}, {"fields": "tags"},
     {"fields": [1]}, {"fields": ["x"] * 33}, {"colour": 1}],
)  # fmt: skip
def test_bad_discovery_requests_are_refused(data: dict[str, object]) -> None:
    with pytest.raises(SignalingRefusal) as info:
        parse_discovery((data,), max_bytes=1000, default_limit=5, max_limit=10)
    assert info.value.code is SignalingCode.INVALID_FILTER


def test_lone_surrogates_are_refused_in_tokens_and_metadata() -> None:
    with pytest.raises(SignalingRefusal) as info:
        parse_auth({"token": "\ud800", "peer_id": "p", "role": "client"}, max_bytes=100)
    assert info.value.code is SignalingCode.INVALID_AUTH and "surrogate" in info.value.message
    with pytest.raises(SignalingRefusal) as info:
        parse_auth(
            {"token": "t", "peer_id": "p", "role": "client", "metadata": {"x": "\udfff"}}, max_bytes=100
        )
    assert "surrogate" in info.value.message


def test_a_session_loses_its_id_only_to_a_record_naming_another_session() -> None:
    ours = SessionRecord(sid="s1", node="node-b", role="worker", secret_hash="h1")
    assert not lost_id(ours, ours)
    assert not lost_id(
        ours, SessionRecord(sid="s1", node="node-b", role="worker", secret_hash="h1", connected=False)
    )
    assert not lost_id(ours, None), "Redis forgot the id: the holder re-publishes it, nothing is lost"
    assert lost_id(ours, SessionRecord(sid="s2", node="node-a", role="worker", secret_hash="h2"))
