"""Bounded, rotated job logs read by logical offset (``fsm_worker/shells/runner/joblog.py``), on real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsm_worker.shells.runner.joblog import (
    MIN_MAX_BYTES,
    BoundedLog,
    LogReader,
    disk_use,
    fresh_log,
    previous_of,
    read_bases,
    read_log_tail,
)

LIMIT = MIN_MAX_BYTES


def stream_bytes(n: int, start: int = 0) -> bytes:
    """Bytes whose value tells their logical offset (mod 251), so any misplaced byte shows."""
    return bytes((start + i) % 251 for i in range(n))


def new_log(tmp_path: Path, limit: int | None = LIMIT) -> tuple[Path, BoundedLog]:
    path = tmp_path / "stdout.log"
    fresh_log(path).close()
    return path, BoundedLog.append(path, limit)


def test_a_reader_that_keeps_up_sees_the_whole_stream_across_rotations(tmp_path: Path) -> None:
    path, writer = new_log(tmp_path)
    reader = LogReader(path)
    assert reader.open() and reader.position == 0
    seen = bytearray()
    for _ in range(40):  # 40 x 1000 bytes into 4 KiB files: rotates about 9 times
        writer.write(stream_bytes(1000, writer.written))
        assert disk_use(path) <= 2 * LIMIT
        while data := reader.read(700):
            seen += data
        assert not reader.take_gap()
    assert bytes(seen) == stream_bytes(40_000) and reader.position == writer.written == 40_000
    assert sorted(read_bases(path).values()) == [
        36 * 1024 - 4096,
        36 * 1024,
    ]  # logical bases of .1 and current
    assert path.stat().st_size == 40_000 - 36 * 1024 and previous_of(path).stat().st_size == LIMIT


def test_a_reader_started_late_begins_at_the_earliest_kept_byte_and_reports_the_gap(tmp_path: Path) -> None:
    path, writer = new_log(tmp_path)
    writer.write(stream_bytes(10_000))
    reader = LogReader(path)
    assert reader.open()
    start = reader.position
    assert start == 10_000 - 10_000 % LIMIT - LIMIT and reader.take_gap() and not reader.take_gap()
    rest = b"".join(iter(lambda: reader.read(4096), b""))
    assert rest == stream_bytes(10_000 - start, start)


def test_a_reader_that_falls_more_than_a_file_behind_skips_to_what_is_kept(tmp_path: Path) -> None:
    path, writer = new_log(tmp_path)
    reader = LogReader(path)
    assert reader.open() and reader.read(100) == stream_bytes(0)  # nothing yet
    writer.write(stream_bytes(100))
    assert reader.read(100) == stream_bytes(100)
    writer.write(stream_bytes(5 * LIMIT, 100))  # its file is deleted while it holds it open
    data = b"".join(iter(lambda: reader.read(4096), b""))
    assert reader.take_gap()  # the bytes of the file deleted in between are gone
    kept_from = min(read_bases(path).values())
    assert data[: LIMIT - 100] == stream_bytes(LIMIT - 100, 100)  # the rest of its own (deleted) file first
    assert data[LIMIT - 100 :] == stream_bytes(100 + 5 * LIMIT - kept_from, kept_from)
    assert reader.position == writer.written


def test_the_tail_spans_the_rotated_file(tmp_path: Path) -> None:
    path, writer = new_log(tmp_path)
    writer.write(stream_bytes(LIMIT + 10))
    assert read_log_tail(path, 100) == stream_bytes(100, LIMIT + 10 - 100)
    assert read_log_tail(tmp_path / "absent.log", 100) == b""


def test_an_unbounded_log_never_rotates_and_a_tiny_bound_is_refused(tmp_path: Path) -> None:
    path, writer = new_log(tmp_path, None)
    writer.write(stream_bytes(3 * LIMIT))
    assert path.stat().st_size == 3 * LIMIT and not previous_of(path).exists()
    with pytest.raises(ValueError, match=f"job_log_max_bytes must be at least {MIN_MAX_BYTES}"):
        BoundedLog.append(path, MIN_MAX_BYTES - 1)


def test_a_log_written_without_bases_is_read_as_one_file(tmp_path: Path) -> None:
    path = tmp_path / "stdout.log"  # as an older wrapper left it
    path.write_bytes(b"line 1\nline 2\n")
    reader = LogReader(path)
    assert reader.open() and reader.read(100) == b"line 1\nline 2\n" and not reader.take_gap()


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), st.integers(1, 3 * LIMIT)), min_size=1, max_size=30))
def test_reads_are_the_stream_exactly_or_report_a_gap(tmp_path_factory: pytest.TempPathFactory,
                                                      steps: list[tuple[bool, int]]) -> None:  # fmt: skip
    """Random writes and reads: every byte read is the stream's byte at the reader's logical position, and
    a jump forward happens only with a gap reported; disk use never exceeds twice the bound."""
    path, writer = new_log(tmp_path_factory.mktemp("log"))
    reader = LogReader(path)
    assert reader.open()
    for write, size in steps:
        if write:
            writer.write(stream_bytes(size, writer.written))
            assert disk_use(path) <= 2 * LIMIT
            continue
        before = reader.position
        data = reader.read(size)
        start = reader.position - len(data)
        assert reader.take_gap() == (start > before)
        assert data == stream_bytes(len(data), start)
    while data := reader.read(LIMIT):
        assert data == stream_bytes(len(data), reader.position - len(data))
        reader.take_gap()
    assert reader.position == writer.written
