"""The client's download receiver as a pure core: the worker's result frames in, file steps out.

The worker announces ``results``, then the manifest (``manifest`` frames: name, size and sha256 of
every file, in sending order) before any byte; each ``file`` header (or ``same``) must match its
manifest entry exactly. It trusts nothing the worker says: every name must be a safe relative path
that collides with no other, and the count and total size are capped (:class:`DownloadLimits`) whatever the worker
announced. The shell (``shells/transfer/results.py``) writes into a fresh folder of its own.
A ``same`` frame (a file the client listed in ``fetch_results.have``, equal on the worker) counts as
done without bytes; it is kept in place (:attr:`DownloadReceiver.kept`).

Idle timeout: with ``idle_timeout``, :class:`FetchSent` starts a deadline that every frame and chunk from the
worker moves ``idle_timeout`` ahead; the shell arms one timer at :meth:`DownloadReceiver.next_deadline` and
feeds :class:`TimerFired`; a download that heard nothing for that long fails ``TIMEOUT``.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from fsm_worker.protocol.transfer.errors import FrameCode, FrameError
from fsm_worker.protocol.transfer.frames import (
    CHUNK_REF,
    End,
    Error,
    FileHeader,
    Frame,
    Held,
    Manifest,
    Results,
    ResultsDone,
    Same,
)
from fsm_worker.protocol.transfer.paths import check_relative_path, path_conflict
from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.protocol.transfer.upload_steps import BadFrameIn, ChunkIn, Failed, FrameIn, WriteChunk
from fsm_worker.protocol.transfer.uploader_steps import TimerFired

GiB = 1024**3
DEFAULT_MAX_DOWNLOAD_FILES = 10_000
DEFAULT_MAX_DOWNLOAD_BYTES = 50 * GiB


def _not_negative(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.metadata['name']} must be at least 0, not {value}")


@attrs.frozen
class DownloadLimits:
    """Caps on one download of results (defaults fit SLEAP model folders); each refusal names its setting."""

    max_files: int = attrs.field(
        default=DEFAULT_MAX_DOWNLOAD_FILES,
        validator=_not_negative,
        metadata={"name": "max_download_files", "help": "most result files one download may bring"},
    )
    max_bytes: int = attrs.field(
        default=DEFAULT_MAX_DOWNLOAD_BYTES,
        validator=_not_negative,
        metadata={"name": "max_download_bytes", "help": "most bytes of results one download may bring"},
    )


# --- events (besides FrameIn, BadFrameIn, ChunkIn and Failed) -----------------------------------------
@attrs.frozen
class FileFinished:
    """Answer to :class:`FinishFile`: the sha256 of the bytes received."""

    sha256: str


@attrs.frozen
class FilePlaced:
    """Answer to :class:`PlaceFile`."""


@attrs.frozen
class FetchSent:
    """The shell sent ``fetch_results``: the worker's silence counts from now."""


DownloadEvent: TypeAlias = (
    FrameIn | BadFrameIn | ChunkIn | FileFinished | FilePlaced | Failed | FetchSent | TimerFired
)


# --- instructions (besides WriteChunk) ----------------------------------------------------------------
@attrs.frozen
class OpenFile:
    """Create a new private temporary file for the next result."""

    name: str
    size: int
    offset: int = 0  # resume: keep the first ``offset`` bytes of the kept partial file


@attrs.frozen
class FinishFile:
    """Close the temporary file and report its sha256."""


@attrs.frozen
class PlaceFile:
    """Move the verified temporary file to ``name`` (relative) in the download folder; never replace."""

    name: str


@attrs.frozen
class DownloadProgress:
    """``on_progress(done, total)`` over the whole download."""

    done: int
    total: int


@attrs.frozen
class DownloadDone:
    """All files arrived verified, in this order."""

    names: tuple[str, ...]


@attrs.frozen
class DownloadFailed:
    """The download is over; ``remote`` when the worker sent the error."""

    code: str
    message: str
    name: str | None = None
    remote: bool = False


DownloadInstruction: TypeAlias = (
    OpenFile | WriteChunk | FinishFile | PlaceFile | DownloadProgress | DownloadDone | DownloadFailed
)


@attrs.define
class _File:
    header: FileHeader
    done: int = 0


class DownloadReceiver:
    """One ``fetch_results`` as seen by the client; ends with exactly one done or failed instruction."""

    def __init__(
        self,
        limits: DownloadLimits | None = None,
        stats: TransferStats | None = None,
        held: dict[str, tuple[int, str]] | None = None,
        resume: tuple[str, int] | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self.limits = limits or DownloadLimits()
        self.idle_timeout = idle_timeout  # seconds the worker may stay silent (None: no limit)
        self.deadline: float | None = None
        self.held = dict(held or {})  # what ``fetch_results.have`` listed: name -> (size, sha256)
        self.resume = resume  # (name, offset) the client asked to resume (``fetch_results.resume``)
        self.kept: list[str] = []  # results the client already held: counted as done, not written
        self.stats = stats if stats is not None else TransferStats()
        self.announced: Results | None = None
        self.manifest: list[Held] = []
        self.file: _File | None = None
        self.names: list[str] = []
        self.taken: set[str] = set()
        self.bytes_announced = 0
        self.bytes_done = 0
        self.finished = False
        self._waiting: str | None = None  # "finish" | "place"

    def next_deadline(self) -> float | None:
        """When the shell must feed :class:`TimerFired` (``None``: no timer)."""
        return None if self.finished else self.deadline

    def handle(self, event: DownloadEvent, now: float) -> list[DownloadInstruction]:
        """Feed one event at time ``now``; never raises."""
        if self.finished:
            return []
        if isinstance(event, TimerFired | FetchSent | FrameIn | ChunkIn):
            if isinstance(event, TimerFired):
                if self.deadline is None or now < self.deadline:
                    return []
                return self._fail(FrameCode.TIMEOUT, f"download stalled for {self.idle_timeout:g} s")
            if self.idle_timeout is not None:  # the worker was heard (or asked): silence counts from now
                self.deadline = now + self.idle_timeout
            if isinstance(event, FetchSent):
                return []
        try:
            return self._handle(event)
        except FrameError as exc:
            return self._fail(exc.code, str(exc), exc.name)

    def validate_state(self) -> None:
        """Invariants (tests call this after every step)."""
        assert len(self.names) <= self.limits.max_files
        assert self.bytes_done <= self.bytes_announced <= self.limits.max_bytes
        assert len(set(self.names)) == len(self.names)
        if self.file is not None:
            assert self.file.done <= self.file.header.size

    def _handle(self, event: DownloadEvent) -> list[DownloadInstruction]:
        if isinstance(event, Failed):
            return self._fail(event.code, event.message, self.file.header.name if self.file else None)
        if isinstance(event, BadFrameIn):
            return self._fail(event.error.code, f"bad frame from the worker: {event.error}")
        if isinstance(event, ChunkIn):
            return self._on_chunk(event.data)
        if isinstance(event, FileFinished):
            return self._on_finished(event.sha256)
        if isinstance(event, FilePlaced) and self._waiting == "place" and self.file is not None:
            header = self.file.header
            self.file, self._waiting = None, None
            self.names.append(header.name)
            self.bytes_done += header.size
            self.stats.files_received += 1
            return []
        if isinstance(event, FrameIn):
            return self._on_frame(event.frame)
        return []  # FetchSent, TimerFired: handled in `handle`

    def _on_frame(self, frame: Frame) -> list[DownloadInstruction]:
        if isinstance(frame, Error):
            if frame.ref == CHUNK_REF:
                return []  # stale, from an abandoned upload
            return self._fail(frame.code, frame.message, frame.name, remote=True)
        if isinstance(frame, Results) and self.announced is None:
            self._check_totals(frame.count, frame.total_size, "announces")
            self.announced = frame
            return []
        if isinstance(frame, Manifest) and self.announced is not None and not self._listed:
            return self._on_manifest(frame)
        if isinstance(frame, FileHeader) and self._listed and self.file is None:
            self._expect(frame.name, frame.size, frame.sha256)
            if frame.offset and (self.resume != (frame.name, frame.offset) or frame.offset > frame.size):
                message = f"{frame.name!r}: offset {frame.offset} was not asked for"
                raise FrameError(message, FrameCode.UNEXPECTED, frame.name)
            self.file = _File(frame, frame.offset)
            return [OpenFile(frame.name, frame.size, frame.offset)]
        if isinstance(frame, Same) and self._listed and self.file is None:
            return self._on_same(frame)
        if isinstance(frame, End) and self.file is not None and frame.name == self.file.header.name:
            if self._waiting is not None:
                raise FrameError("end frame while the file is being finished", FrameCode.UNEXPECTED)
            if self.file.done != self.file.header.size:
                message = f"{frame.name!r}: received {self.file.done} of {self.file.header.size} bytes"
                raise FrameError(message, FrameCode.SIZE_MISMATCH, frame.name)
            self._waiting = "finish"
            return [FinishFile()]
        if isinstance(frame, ResultsDone) and self._listed and self.file is None:
            if frame.count != len(self.names) or frame.count != len(self.manifest):
                message = f"results_done says {frame.count} files, {len(self.names)} arrived"
                raise FrameError(message, FrameCode.UNEXPECTED)
            self.finished = True
            return [DownloadDone(tuple(self.names))]
        raise FrameError(f"unexpected {frame.TYPE!r} frame during download", FrameCode.UNEXPECTED)

    def _check_totals(self, count: int, size: int, verb: str) -> None:
        if count > self.limits.max_files:
            message = f"the worker {verb} {count} result files (max_download_files = {self.limits.max_files})"
            raise FrameError(message, FrameCode.TOO_MANY_FILES)
        if size > self.limits.max_bytes:
            message = (
                f"the worker {verb} {size} bytes of results (max_download_bytes = {self.limits.max_bytes})"
            )
            raise FrameError(message, FrameCode.TOO_LARGE)

    @property
    def _listed(self) -> bool:
        """Whether the whole manifest arrived."""
        return self.announced is not None and len(self.manifest) == self.announced.count

    def _on_manifest(self, frame: Manifest) -> list[DownloadInstruction]:
        assert self.announced is not None
        for entry in frame.files:
            self._take(entry.name, entry.size)
            if len(self.manifest) >= self.announced.count:
                message = f"the manifest lists more files than the {self.announced.count} announced"
                raise FrameError(message, FrameCode.UNEXPECTED, entry.name)
            self.manifest.append(entry)
        return []

    def _expect(self, name: str, size: int, sha256: str) -> None:
        """The next result must be the next manifest entry, exactly."""
        if len(self.names) >= len(self.manifest):
            raise FrameError(
                f"{name!r}: more result files than the manifest lists", FrameCode.UNEXPECTED, name
            )
        entry = self.manifest[len(self.names)]
        if (entry.name, entry.size, entry.sha256) != (name, size, sha256):
            message = (
                f"{name!r} ({size} bytes, sha256 {sha256}) does not match the manifest entry "
                f"{entry.name!r} ({entry.size} bytes, sha256 {entry.sha256})"
            )
            raise FrameError(message, FrameCode.UNEXPECTED, name)

    def _on_same(self, same: Same) -> list[DownloadInstruction]:
        self._expect(same.name, same.size, same.sha256)
        if self.held.get(same.name) != (same.size, same.sha256):
            message = f"{same.name!r}: the worker says it is unchanged, but the client holds no such file"
            raise FrameError(message, FrameCode.UNEXPECTED, same.name)
        self.names.append(same.name)
        self.kept.append(same.name)
        self.bytes_done += same.size
        self.stats.files_deduped += 1
        self.stats.bytes_skipped += same.size
        total = max(self.announced.total_size if self.announced else 0, self.bytes_done)
        return [DownloadProgress(self.bytes_done, total)]

    def _take(self, name: str, size: int) -> None:
        check_relative_path(name)
        clash = path_conflict(name, self.taken)
        if clash is not None:
            message = f"result {name!r} collides with {clash!r}; nothing is merged or overwritten"
            raise FrameError(message, FrameCode.BAD_NAME, name)
        self._check_totals(len(self.taken) + 1, self.bytes_announced + size, "sends")
        self.taken.add(name)
        self.bytes_announced += size

    def _on_chunk(self, data: bytes) -> list[DownloadInstruction]:
        file = self.file
        if file is None or self._waiting is not None:
            raise FrameError("binary chunk outside a result file", FrameCode.UNEXPECTED)
        if file.done + len(data) > file.header.size:
            message = f"{file.header.name!r}: chunk would exceed the announced size {file.header.size}"
            raise FrameError(message, FrameCode.SIZE_MISMATCH, file.header.name)
        file.done += len(data)
        self.stats.chunk_bytes_received += len(data)
        self.stats.chunks_received += 1
        total = max(self.announced.total_size if self.announced else 0, self.bytes_done)
        return [WriteChunk(data), DownloadProgress(self.bytes_done + file.done, total)]

    def _on_finished(self, sha256: str) -> list[DownloadInstruction]:
        if self._waiting != "finish" or self.file is None:
            return []
        header = self.file.header
        if sha256 != header.sha256:
            message = f"{header.name!r}: sha256 {sha256} does not match the announced {header.sha256}"
            raise FrameError(message, FrameCode.HASH_MISMATCH, header.name)
        self._waiting = "place"
        return [PlaceFile(header.name)]

    def _fail(
        self, code: str, message: str, name: str | None = None, remote: bool = False
    ) -> list[DownloadInstruction]:
        self.finished = True
        self.file = None
        self.deadline = None
        return [DownloadFailed(code, message, name, remote)]
