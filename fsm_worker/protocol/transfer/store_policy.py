"""Which content-store entries to delete: past their retention, then least recently used over the quota."""

from __future__ import annotations

import attrs

DAY = 86400.0
GiB = 1024**3
DEFAULT_STORE_RETENTION = 7 * DAY
DEFAULT_STORE_QUOTA_BYTES = 20 * GiB


@attrs.frozen
class StoreEntry:
    """One stored content: its sha256, size and when it was last used (added or shared)."""

    sha256: str
    size: int
    last_used: float


def evictions(entries: list[StoreEntry], now: float, retention: float, quota_bytes: int) -> list[str]:
    """The sha256s to delete: unused for longer than ``retention``, then the oldest until within the quota."""
    expired = {e.sha256 for e in entries if now - e.last_used > retention}
    kept = sorted((e for e in entries if e.sha256 not in expired), key=lambda e: (-e.last_used, e.sha256))
    total = 0
    over: list[str] = []
    for entry in kept:  # newest first: the newest entries that fit stay
        total += entry.size
        if total > quota_bytes:
            over.append(entry.sha256)
    return sorted(expired) + over
