"""Counters kept by both endpoints (tests and benchmarks read them)."""

from __future__ import annotations

import attrs


@attrs.define
class TransferStats:
    """Bytes and files moved by one endpoint; deduped/resumed bytes are never counted as sent."""

    chunk_bytes_sent: int = 0
    chunks_sent: int = 0
    chunk_bytes_received: int = 0
    chunks_received: int = 0
    files_sent: int = 0
    files_received: int = 0
    files_deduped: int = 0
    files_resumed: int = 0
    bytes_skipped: int = 0  # bytes not sent thanks to dedupe or resume
    errors_sent: int = 0
    chunks_dropped: int = 0  # binary frames that arrived with no upload open
