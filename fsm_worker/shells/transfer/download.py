"""The client's download as a thin shell around :class:`DownloadReceiver`, fed from the message handler."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from fsm_worker.protocol.transfer.download import (
    DownloadDone,
    DownloadEvent,
    DownloadFailed,
    DownloadInstruction,
    DownloadLimits,
    DownloadProgress,
    DownloadReceiver,
    FetchSent,
    FileFinished,
    FilePlaced,
    FinishFile,
    OpenFile,
    PlaceFile,
)
from fsm_worker.protocol.transfer.errors import FrameCode, FrameError, RemoteTransferError, TransferError
from fsm_worker.protocol.transfer.frames import Frame
from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.protocol.transfer.upload_steps import BadFrameIn, ChunkIn, Failed, FrameIn, WriteChunk
from fsm_worker.protocol.transfer.uploader_steps import TimerFired
from fsm_worker.shells.transfer.errors import ChannelClosedError
from fsm_worker.shells.transfer.files import FileSink

ProgressFn = Callable[[int, int], None]
"""``on_progress(bytes_done, bytes_total)`` over the whole upload or download."""


class DownloadShell:
    """One ``fetch_results``: a thin shell around :class:`DownloadReceiver`, fed from the message handler.

    Files are written into ``staging`` (a fresh folder of ours, so no link can be in the way), as new
    files with normal permissions (0666 under the umask); :meth:`publish` moves them to their place.
    The core's idle deadline (``idle_timeout``) is one loop timer, armed after every feed (:meth:`start`
    after sending ``fetch_results``).
    """

    def __init__(
        self,
        staging: Path,
        limits: DownloadLimits,
        on_progress: ProgressFn | None,
        stats: TransferStats,
        held: dict[str, tuple[int, str]] | None = None,
        resume: tuple[str, Path, int, hashlib._Hash | None] | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self.staging = staging
        self.resume = resume  # (name, kept partial file, offset, hash of that prefix) of a dropped download
        self.core = DownloadReceiver(
            limits, stats, held, (resume[0], resume[2]) if resume else None, idle_timeout=idle_timeout
        )
        self.partial: tuple[str, Path, int] | None = None  # what a channel drop left, resumable
        self.on_progress = on_progress
        self.future: asyncio.Future[tuple[str, ...]] = asyncio.get_running_loop().create_future()
        self.sink: FileSink | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._count = 0

    def start(self) -> None:
        """``fetch_results`` was sent: the core's idle deadline starts."""
        self._feed(FetchSent())

    def fail(self, exc: BaseException) -> None:
        """End the download locally (channel closed, abandoned); a finished one is unaffected.

        A channel drop keeps the file in flight (:attr:`partial`) for a resume on a new channel.
        """
        if isinstance(exc, ChannelClosedError) and self.sink is not None and not self.future.done():
            self.sink.close()
            self.partial = (self.sink.name, self.sink.part_path, self.sink.done)
            self.sink = None
        self._close_sink()
        self._arm_timer(None)
        if not self.future.done():
            self.future.set_exception(exc)

    def on_frame(self, frame: Frame) -> None:
        self._feed(FrameIn(frame))

    def on_bad_frame(self, error: FrameError) -> None:
        self._feed(BadFrameIn(error))

    def on_chunk(self, data: bytes) -> None:
        self._feed(ChunkIn(data))

    def _arm_timer(self, deadline: float | None) -> None:
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        self._feed(TimerFired())

    def _feed(self, event: DownloadEvent) -> None:
        events = [event]
        while events:
            for instruction in self.core.handle(events.pop(0), self._loop.time()):
                try:
                    answer = self._do(instruction)
                except (FrameError, OSError) as exc:
                    code = exc.code if isinstance(exc, FrameError) else _os_error_code(exc)
                    answer = Failed(FrameCode(code), str(exc))
                if answer is not None:
                    events.append(answer)
        self._arm_timer(self.core.next_deadline())

    def _do(self, instruction: DownloadInstruction) -> DownloadEvent | None:
        if isinstance(instruction, WriteChunk):
            assert self.sink is not None
            self.sink.write(instruction.data)
        elif isinstance(instruction, DownloadProgress):
            if self.on_progress is not None:
                self.on_progress(instruction.done, instruction.total)
        elif isinstance(instruction, OpenFile):
            self._count += 1
            part = self.staging / f".incoming-{self._count}"
            hasher = None
            if self.resume is not None and self.resume[0] == instruction.name:
                part = self.resume[1]
                hasher = self.resume[3].copy() if instruction.offset and self.resume[3] else None
            self.sink = FileSink(
                part,
                instruction.name,
                instruction.size,
                "0" * 64,
                instruction.offset,
                hasher,
                mode=_FILE_MODE,
            )
        elif isinstance(instruction, FinishFile):
            assert self.sink is not None
            return FileFinished(self.sink.digest())
        elif isinstance(instruction, PlaceFile):
            assert self.sink is not None
            target = self.staging.joinpath(*instruction.name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(self.sink.part_path, target)  # never replaces: an existing path raises
            self.sink.part_path.unlink()
            self.sink = None
            return FilePlaced()
        elif isinstance(instruction, DownloadDone):
            self.future.set_result(instruction.names)
        elif isinstance(instruction, DownloadFailed):
            self._close_sink()
            cls = RemoteTransferError if instruction.remote else TransferError
            if not self.future.done():
                self.future.set_exception(cls(instruction.code, instruction.message, instruction.name))
        return None

    def _close_sink(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.sink.part_path.unlink(missing_ok=True)
            self.sink = None


def _os_error_code(exc: OSError) -> FrameCode:
    return FrameCode.EXISTS if isinstance(exc, (FileExistsError, NotADirectoryError)) else FrameCode.IO_ERROR


_FILE_MODE = 0o666  # the umask applies, as for any file the user creates
