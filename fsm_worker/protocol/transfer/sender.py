"""The worker's results sender as a pure core: ``fetch_results`` in, frames and file-sending steps out.

Results keep their relative paths (``a/x.txt``): the shell lists them, this core refuses unsafe
names, links and device files, hashes every file, sends the manifest (name, size, sha256 of each,
in ``manifest`` frames), then walks the files one at a time (``file`` header → chunks → ``end``)
and closes with ``results_done``. A file the client says it already holds with the
same size and sha256 (``fetch_results.have``) is answered with ``same`` instead of its bytes.
"""

from __future__ import annotations

import enum
from typing import TypeAlias

import attrs

from fsm_worker.protocol.transfer.errors import FrameCode, FrameError
from fsm_worker.protocol.transfer.frames import (
    MAX_CONTROL_FRAME,
    End,
    Error,
    FetchResults,
    FileHeader,
    Held,
    Manifest,
    Partial,
    Results,
    ResultsDone,
    Same,
)
from fsm_worker.protocol.transfer.paths import check_relative_path
from fsm_worker.protocol.transfer.receiver import Send
from fsm_worker.protocol.transfer.stats import TransferStats


class EntryKind(enum.StrEnum):
    """What a result path is on disk (not following links)."""

    FILE = "file"
    LINK = "link"
    OTHER = "other"  # device, fifo, socket, ...


@attrs.frozen
class ResultEntry:
    """One listed result: its path relative to the outputs folder, what it is and its size."""

    name: str
    kind: EntryKind
    size: int = 0


# --- events ------------------------------------------------------------------------------------------
@attrs.frozen
class ResultsListed:
    """Answer to :class:`ListResults`; ``entries`` is ``None`` when the results are not ready."""

    entries: tuple[ResultEntry, ...] | None
    reason: str = "results are not ready"


@attrs.frozen
class ResultHashed:
    """Answer to :class:`HashResult`; ``prefix_sha256`` when it asked for a prefix too."""

    index: int
    sha256: str
    prefix_sha256: str | None = None


@attrs.frozen
class ResultStreamed:
    """Answer to :class:`StreamResult`: ``chunk_bytes`` in ``chunks`` messages went out."""

    index: int
    chunk_bytes: int
    chunks: int


@attrs.frozen
class SendingFailed:
    """Hashing or streaming a result failed; ``channel_closed`` when the channel went away."""

    code: FrameCode
    message: str
    channel_closed: bool = False


SenderEvent: TypeAlias = ResultsListed | ResultHashed | ResultStreamed | SendingFailed


# --- instructions ------------------------------------------------------------------------------------
@attrs.frozen
class ListResults:
    """Ask the host for the result paths and ``lstat`` each."""


@attrs.frozen
class HashResult:
    """sha256 of result ``index`` (in a thread), and of its first ``prefix`` bytes when set."""

    index: int
    name: str
    prefix: int | None = None


@attrs.frozen
class StreamResult:
    """Send bytes ``[offset, size)`` of result ``index`` as flow-controlled chunks."""

    index: int
    name: str
    size: int
    offset: int = 0


SenderInstruction: TypeAlias = Send | ListResults | HashResult | StreamResult


class ResultsSender:
    """One job's results, sent on request; one download at a time."""

    def __init__(self, stats: TransferStats | None = None) -> None:
        self.stats = stats if stats is not None else TransferStats()
        self.files: tuple[ResultEntry, ...] = ()
        self.index = -1  # the file in flight; -1 when idle
        self.listing = False
        self.held: dict[str, tuple[int, str]] = {}
        self.digests: list[str] = []  # sha256 of files[0:len(digests)]; all hashed before any is sent
        self.resume: Partial | None = None
        self.resume_at = 0  # the verified offset of ``resume`` (0: send it whole)

    @property
    def busy(self) -> bool:
        """Whether a download is being listed or sent."""
        return self.listing or self.index >= 0

    def fetch(self, frame: FetchResults) -> list[SenderInstruction]:
        """A ``fetch_results`` frame arrived."""
        if self.busy:
            return [self._error(FrameCode.BUSY, "results are already being sent")]
        self.listing = True
        self.held = {held.name: (held.size, held.sha256) for held in frame.have}
        self.resume, self.resume_at = frame.resume, 0
        return [ListResults()]

    def handle(self, event: SenderEvent) -> list[SenderInstruction]:
        """Feed the answer to the last instruction; never raises."""
        if isinstance(event, ResultsListed) and self.listing:
            self.listing = False
            return self._start(event)
        if isinstance(event, SendingFailed) and self.busy:
            self.listing, self.index, self.files, self.held, self.digests = False, -1, (), {}, []
            return [] if event.channel_closed else [self._error(event.code, event.message)]
        hashing = len(self.digests) < len(self.files)
        if isinstance(event, ResultHashed) and hashing and event.index == self.index >= 0:
            self.digests.append(event.sha256)
            resume = self.resume
            if resume is not None and self.files[event.index].name == resume.name:
                self.resume_at = resume.offset if event.prefix_sha256 == resume.prefix_sha256 else 0
            self.index += 1
            if self.index < len(self.files):
                return [self._hash(self.index)]
            self.index = 0
            return [*self._manifest(), *self._send_from(0)]
        if isinstance(event, ResultStreamed) and not hashing and event.index == self.index >= 0:
            self.stats.chunk_bytes_sent += event.chunk_bytes
            self.stats.chunks_sent += event.chunks
            self.stats.files_sent += 1
            return [Send(End(name=self.files[event.index].name)), *self._send_from(event.index + 1)]
        return []  # an answer nobody waits for (late, after a failure): nothing to do

    def _manifest(self) -> list[SenderInstruction]:
        """The manifest in as many frames as its size needs (each well under the control-frame cap)."""
        out: list[SenderInstruction] = []
        batch: list[Held] = []
        budget = 0
        for entry, digest in zip(self.files, self.digests, strict=True):
            cost = 6 * len(entry.name.encode()) + 128  # worst case: every byte JSON-escaped
            if batch and budget + cost > MAX_CONTROL_FRAME // 2:
                out.append(Send(Manifest(files=batch)))
                batch, budget = [], 0
            batch.append(Held(name=entry.name, size=entry.size, sha256=digest))
            budget += cost
        if batch:
            out.append(Send(Manifest(files=batch)))
        return out

    def _send_from(self, index: int) -> list[SenderInstruction]:
        """Send result ``index`` (``same`` for those the client holds unchanged) or close the download."""
        out: list[SenderInstruction] = []
        while index < len(self.files):
            entry, digest = self.files[index], self.digests[index]
            if self.held.get(entry.name) != (entry.size, digest):
                self.index = index
                offset = self.resume_at if self.resume is not None and self.resume.name == entry.name else 0
                if offset:
                    self.stats.files_resumed += 1
                    self.stats.bytes_skipped += offset
                header = FileHeader(name=entry.name, size=entry.size, sha256=digest, offset=offset)
                return [*out, Send(header), StreamResult(index, entry.name, entry.size, offset)]
            self.stats.files_deduped += 1
            self.stats.bytes_skipped += entry.size
            out.append(Send(Same(name=entry.name, size=entry.size, sha256=digest)))
            index += 1
        out.append(Send(ResultsDone(count=len(self.files))))
        self.index, self.files, self.held, self.digests, self.resume = -1, (), {}, [], None
        return out

    def _start(self, listed: ResultsListed) -> list[SenderInstruction]:
        if listed.entries is None:
            return [self._error(FrameCode.NOT_READY, listed.reason)]
        seen: set[str] = set()
        for entry in listed.entries:
            try:
                check_relative_path(entry.name)
            except FrameError as exc:
                return [self._error(FrameCode.BAD_NAME, f"result {entry.name!r} refused: {exc}")]
            if entry.kind is not EntryKind.FILE:
                return [self._error(FrameCode.LINK_REFUSED, f"result {entry.name!r} is not a regular file")]
            if entry.name in seen:
                return [self._error(FrameCode.BAD_NAME, f"result {entry.name!r} is listed twice")]
            seen.add(entry.name)
        files = tuple(sorted(listed.entries, key=lambda e: e.name))
        out: list[SenderInstruction] = [
            Send(Results(count=len(files), total_size=sum(e.size for e in files)))
        ]
        if not files:
            return [*out, Send(ResultsDone(count=0))]
        self.files, self.index = files, 0
        return [*out, self._hash(0)]

    def _hash(self, index: int) -> HashResult:
        entry, resume = self.files[index], self.resume
        if resume is not None and resume.name == entry.name and 0 < resume.offset < entry.size:
            return HashResult(index, entry.name, prefix=resume.offset)
        return HashResult(index, entry.name)

    def validate_state(self) -> None:
        """Invariants (tests call this after every step)."""
        assert not (self.listing and self.index >= 0)
        assert -1 <= self.index < max(len(self.files), 1)
        assert (self.index >= 0) == bool(self.files)

    def _error(self, code: FrameCode, message: str) -> Send:
        self.stats.errors_sent += 1
        return Send(Error(code=code, message=message, ref=FetchResults.TYPE))
