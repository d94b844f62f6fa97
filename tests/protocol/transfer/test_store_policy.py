"""The store's eviction policy (pure)."""

from __future__ import annotations

from fsm_worker.protocol.transfer.store_policy import StoreEntry, evictions


def test_expired_first_then_least_recently_used_above_the_quota() -> None:
    entries = [
        StoreEntry("a" * 64, 10, last_used=0.0),
        StoreEntry("b" * 64, 10, last_used=90.0),
        StoreEntry("c" * 64, 10, last_used=95.0),
        StoreEntry("d" * 64, 10, last_used=99.0),
    ]
    assert evictions(entries, now=100.0, retention=50.0, quota_bytes=100) == ["a" * 64]
    assert evictions(entries, now=100.0, retention=50.0, quota_bytes=20) == ["a" * 64, "b" * 64]
    assert evictions(entries, now=100.0, retention=1000.0, quota_bytes=0) == [
        "d" * 64,
        "c" * 64,
        "b" * 64,
        "a" * 64,
    ]
    assert evictions([], now=0.0, retention=0.0, quota_bytes=0) == []
