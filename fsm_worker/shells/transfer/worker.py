"""Worker side of the transfer protocol: a thin shell around :class:`WorkerTransferCore`.

It reads data-channel messages, feeds them to the core and carries out the core's instructions
(disk, hashing, channel writes), feeding every result back as an event. It decides nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import shutil
import stat
from collections import deque
from collections.abc import Callable
from pathlib import Path

from fsm_worker.protocol.transfer import receiver as rx
from fsm_worker.protocol.transfer import sender as tx
from fsm_worker.protocol.transfer.errors import FrameCode, FrameError, TransferError
from fsm_worker.protocol.transfer.frames import parse_frame
from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.protocol.transfer.upload_limits import DEFAULT_MAX_INPUT_FILES, UploadLimits
from fsm_worker.protocol.transfer.worker import WorkerEvent, WorkerInstruction, WorkerTransferCore
from fsm_worker.shells.transfer.files import FileSink, HashAhead, sha256_of
from fsm_worker.shells.transfer.flow import ChannelWriter, DataChannel, TransferTuning, off
from fsm_worker.shells.transfer.names import ensure_real_dir, regular_file_size, safe_target
from fsm_worker.shells.transfer.store import ContentStore

log = logging.getLogger(__name__)

INPUTS_DIR = "inputs"
PARTIAL_DIR = ".partial"
OUTPUTS_DIR = "outputs"
_CLOSED = object()

CommitFn = Callable[[list[Path]], None]
ResultsFn = Callable[[], "list[Path] | None"]
WorkerProgressFn = Callable[[str, int, int], None]


_INLINE_STORE_ADD = 1 << 20
"""Inputs up to this size are added to the store on the loop: a thread hop costs more than the link (or
the copy, if linking fails) of a small file."""


class WorkerTransferEndpoint:
    """Serves one data channel for one job.

    Uploads land in ``job_dir/inputs`` (partials in ``job_dir/.partial``, named by sha256, so a new
    endpoint for the same job resumes them). ``commit`` calls ``on_commit(paths)``; ``fetch_results``
    sends what ``results()`` returns (``None`` → ``NOT_READY``), each named by its path relative to
    ``results_root`` (default ``job_dir/outputs``). Create a new endpoint for every channel; pass
    ``committed=True`` when the job's inputs were already committed.
    """

    def __init__(
        self,
        channel: DataChannel,
        job_dir: Path,
        store: ContentStore,
        max_upload_bytes: int,
        on_commit: CommitFn,
        results: ResultsFn,
        *,
        tuning: TransferTuning | None = None,
        on_progress: WorkerProgressFn | None = None,
        committed: bool = False,
        max_input_files: int = DEFAULT_MAX_INPUT_FILES,
        results_root: Path | None = None,
        on_first_input: Callable[[], None] | None = None,
    ) -> None:
        self.channel = channel
        self.job_dir = job_dir
        self.inputs_dir = job_dir / INPUTS_DIR
        self.partial_dir = job_dir / PARTIAL_DIR
        self.results_root = results_root if results_root is not None else job_dir / OUTPUTS_DIR
        self.store = store
        self.on_commit = on_commit
        self.results = results
        self.on_progress = on_progress
        self.on_first_input = on_first_input
        self.core = WorkerTransferCore(UploadLimits(max_upload_bytes, max_input_files), committed=committed)
        self._writer = ChannelWriter(channel, tuning or TransferTuning())
        self._sink: FileSink | None = None
        self._result_paths: dict[str, Path] = {}
        self._result_sizes: dict[str, int] = {}
        self._hashes: HashAhead | None = None  # the listed results, hashed ahead of the core's requests
        self._sending: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[str | bytes | object] = asyncio.Queue()
        channel.on("message", self._on_message)
        channel.on("close", self._on_close)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="worker-transfer")
        if channel.readyState in ("closing", "closed"):
            self._on_close()

    @property
    def stats(self) -> TransferStats:
        """Counters kept by the core."""
        return self.core.stats

    @property
    def committed(self) -> bool:
        """Whether the inputs were committed."""
        return self.core.receiver.committed

    # --- channel events (sync, never raise) ---------------------------------------------------------
    def _on_message(self, message: str | bytes) -> None:
        self._queue.put_nowait(message)

    def _on_close(self) -> None:
        self._queue.put_nowait(_CLOSED)

    async def wait_closed(self) -> None:
        """Return once the channel closed and the endpoint released its files."""
        await asyncio.shield(self._task)

    async def aclose(self) -> None:
        """Stop serving (the channel itself is left to its owner); partial uploads are kept."""
        self._on_close()
        await self.wait_closed()

    # --- main loop ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._feed(rx.Restored(*await asyncio.to_thread(self._scan_job_dir)))
            while (message := await self._queue.get()) is not _CLOSED:
                if isinstance(message, bytes) and self.on_first_input is not None:
                    self.on_first_input()  # the first input bytes: the worker core's first-input deadline ends
                    self.on_first_input = None
                await self._feed(self._event_for(message))
        finally:
            self._release()

    @staticmethod
    def _event_for(message: object) -> WorkerEvent:
        if isinstance(message, bytes):
            return rx.ChunkIn(message)
        try:
            return rx.FrameIn(parse_frame(str(message)))
        except FrameError as exc:
            return rx.BadFrameIn(exc)

    async def _feed(self, event: WorkerEvent) -> None:
        """Feed ``event`` and carry out the instructions, feeding each answer back, until none is left."""
        events = deque([event])
        while events:
            for instruction in self.core.handle(events.popleft()):
                try:
                    answer = await self._do(instruction)
                except FrameError as exc:
                    answer = self._failure(instruction, exc.code, str(exc))
                except OSError as exc:
                    log.warning("transfer I/O error: %s", exc)
                    message = f"{type(exc).__name__}: {exc.strerror or exc}"
                    answer = self._failure(instruction, FrameCode.IO_ERROR, message)
                except Exception:
                    log.exception("transfer endpoint bug while carrying out %r", instruction)
                    answer = self._failure(
                        instruction, FrameCode.INTERNAL, "internal error while handling the frame"
                    )
                if answer is not None:
                    events.append(answer)

    @staticmethod
    def _failure(instruction: WorkerInstruction, code: FrameCode, message: str) -> WorkerEvent | None:
        if isinstance(instruction, (tx.HashResult, tx.StreamResult, tx.ListResults)):
            return tx.SendingFailed(code, message)
        if isinstance(instruction, (rx.AddToStore, rx.RemovePartials, rx.CloseUpload, rx.DiscardPartial)):
            return None  # housekeeping: logged, never a protocol event
        return rx.Failed(code, message)

    async def _do(self, instruction: WorkerInstruction) -> WorkerEvent | None:
        """Carry out one instruction; returns the core's answer event, if the instruction has one."""
        if isinstance(instruction, rx.Send):
            self._send(instruction)
        elif isinstance(instruction, rx.WriteChunk):
            assert self._sink is not None
            self._sink.write(instruction.data)
        elif isinstance(instruction, rx.Progress):
            if self.on_progress is not None:
                self.on_progress(instruction.name, instruction.done, instruction.size)
        elif isinstance(instruction, rx.Probe):
            return await self._probe(instruction)
        elif isinstance(instruction, rx.CheckProof):
            expected = await asyncio.to_thread(
                self.store.proof, instruction.sha256, instruction.size, instruction.nonce
            )
            return rx.ProofChecked(expected is not None and hmac.compare_digest(expected, instruction.proof))
        elif isinstance(instruction, rx.Materialize):
            target = safe_target(self.inputs_dir, instruction.name)
            ok = await asyncio.to_thread(self.store.materialize, instruction.sha256, instruction.size, target)
            return rx.Materialized(ok)
        elif isinstance(instruction, rx.OpenUpload):
            return await self._open(instruction)
        elif isinstance(instruction, rx.CloseUpload):
            self._close_sink()
        elif isinstance(instruction, rx.FinishUpload):
            sink, self._sink = self._sink, None
            assert sink is not None
            return rx.UploadFinished(sink.digest())
        elif isinstance(instruction, rx.DiscardPartial):
            self._partial(instruction.sha256).unlink(missing_ok=True)
        elif isinstance(instruction, rx.PlaceInput):
            target = safe_target(ensure_real_dir(self.inputs_dir), instruction.name)
            os.replace(self._partial(instruction.sha256), target)
            return rx.InputPlaced()
        elif isinstance(instruction, rx.AddToStore):
            await self._add_to_store(instruction)
        elif isinstance(instruction, rx.RunCommit):
            return self._commit(instruction)
        elif isinstance(instruction, rx.RemovePartials):
            with contextlib.suppress(OSError):
                await asyncio.to_thread(shutil.rmtree, self.partial_dir)
        elif isinstance(instruction, tx.ListResults):
            return self._list_results()
        elif isinstance(instruction, (tx.HashResult, tx.StreamResult)):
            self._sending = asyncio.get_running_loop().create_task(self._send_results(instruction))
        return None

    # --- instructions -------------------------------------------------------------------------------
    def _partial(self, sha256: str) -> Path:
        return self.partial_dir / f"{sha256}.part"

    def _scan_job_dir(self) -> tuple[dict[str, int], dict[str, int]]:
        """Once per endpoint: what an earlier endpoint left (regular files only)."""

        def sizes(directory: Path, suffix: str) -> dict[str, int]:
            if not directory.is_dir() or directory.is_symlink():
                return {}
            found: dict[str, int] = {}
            for entry in os.scandir(directory):
                if entry.name.endswith(suffix) and entry.is_file(follow_symlinks=False):
                    found[entry.name.removesuffix(suffix)] = entry.stat(follow_symlinks=False).st_size
            return found

        return sizes(self.inputs_dir, ""), sizes(self.partial_dir, ".part")

    async def _probe(self, probe: rx.Probe) -> rx.Probed:
        ensure_real_dir(self.job_dir)
        safe_target(ensure_real_dir(self.inputs_dir), probe.name)
        partial = ensure_real_dir(self.partial_dir) / f"{probe.sha256}.part"
        if self.store.verify:  # re-hashes the entry: off the loop
            in_store = await asyncio.to_thread(self.store.lookup, probe.sha256, probe.size) is not None
        else:  # one lstat: cheaper than a thread hop (a put of a small file is mostly such fixed costs)
            in_store = self.store.lookup(probe.sha256, probe.size) is not None
        return rx.Probed(in_store, regular_file_size(partial) or 0, secrets.token_hex(16))

    async def _open(self, open_: rx.OpenUpload) -> rx.UploadOpened:
        partial = self._partial(open_.sha256)
        hasher = await asyncio.to_thread(sha256_of, partial, open_.offset) if open_.offset else None
        self._sink = FileSink(partial, open_.name, open_.size, open_.sha256, open_.offset, hasher)
        return rx.UploadOpened(hasher.hexdigest() if hasher is not None else None)

    def _close_sink(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    async def _add_to_store(self, add: rx.AddToStore) -> None:
        source = self.inputs_dir / add.name
        try:
            if (regular_file_size(source) or 0) <= _INLINE_STORE_ADD:  # a link, or a small copy at worst
                self.store.add(source, add.sha256, job_dir=self.job_dir)
            else:
                await asyncio.to_thread(self.store.add, source, add.sha256, job_dir=self.job_dir)
        except OSError as exc:
            log.warning("content store: could not add %s: %s", add.sha256, exc)

    def _commit(self, commit: rx.RunCommit) -> rx.CommitAccepted | rx.Failed:
        try:
            self.on_commit([self.inputs_dir / name for name in commit.names])
        except Exception as exc:
            return rx.Failed(FrameCode.COMMIT_FAILED, f"commit refused: {exc}")
        return rx.CommitAccepted()

    def _list_results(self) -> tx.ResultsListed:
        try:
            paths = self.results()
        except Exception as exc:
            return tx.ResultsListed(None, f"results unavailable: {exc}")
        if paths is None:
            return tx.ResultsListed(None)
        self._forget_hashes()
        self._result_paths, self._result_sizes = {}, {}
        entries = []
        for path in paths:
            name, kind, size = self._describe_result(path)
            self._result_paths[name] = path
            self._result_sizes[name] = size
            entries.append(tx.ResultEntry(name, kind, size))
        return tx.ResultsListed(tuple(entries))

    def _describe_result(self, path: Path) -> tuple[str, tx.EntryKind, int]:
        """The result's name relative to ``results_root`` and what it is (any link on the way counts)."""
        try:
            relative = path.relative_to(self.results_root)
        except ValueError:
            relative = Path(path.name)
        kind = tx.EntryKind.FILE
        size = 0
        for depth in range(1, len(relative.parts) + 1):
            try:
                st = (self.results_root / Path(*relative.parts[:depth])).lstat()
            except OSError:
                return relative.as_posix(), tx.EntryKind.OTHER, 0
            last = depth == len(relative.parts)
            if stat.S_ISLNK(st.st_mode):
                kind = tx.EntryKind.LINK
            elif (last and not stat.S_ISREG(st.st_mode)) or (not last and not stat.S_ISDIR(st.st_mode)):
                kind = tx.EntryKind.OTHER if kind is tx.EntryKind.FILE else kind
            size = st.st_size
        return relative.as_posix(), kind, size

    async def _send_results(self, first: tx.HashResult | tx.StreamResult) -> None:
        """One download as a task: carry out hashing and streaming, feeding each answer back."""
        instructions: deque[WorkerInstruction] = deque([first])
        while instructions:
            instruction = instructions.popleft()
            answer: tx.SenderEvent | None = None
            try:
                if isinstance(instruction, tx.HashResult):
                    path = self._result_paths[instruction.name]
                    digest = await self._hash_ahead().digest(instruction.name)
                    prefix = None
                    if instruction.prefix is not None:
                        prefix = (await asyncio.to_thread(sha256_of, path, instruction.prefix)).hexdigest()
                    answer = tx.ResultHashed(instruction.index, digest, prefix)
                elif isinstance(instruction, tx.StreamResult):
                    path = self._result_paths[instruction.name]
                    bytes_before, chunks_before = self._writer.chunk_bytes_sent, self._writer.chunks_sent
                    await self._writer.send_file(path, instruction.offset, instruction.size)
                    answer = tx.ResultStreamed(
                        instruction.index,
                        self._writer.chunk_bytes_sent - bytes_before,
                        self._writer.chunks_sent - chunks_before,
                    )
                elif isinstance(instruction, rx.Send):
                    self._send(instruction)
            except TransferError as exc:
                log.info("sending results stopped: %s", exc)
                answer = tx.SendingFailed(FrameCode(exc.code), exc.message, channel_closed=True)
            except (OSError, FrameError) as exc:
                log.warning("sending results failed: %s", exc)
                answer = tx.SendingFailed(FrameCode.IO_ERROR, f"could not send results: {exc}")
            if answer is not None:
                instructions.extend(self.core.handle(answer))

    def _hash_ahead(self) -> HashAhead:
        """The listed results' hashes, started at the core's first request (the core hashes in name order)."""
        if self._hashes is None:
            names = sorted(self._result_paths)
            self._hashes = HashAhead([(n, self._result_paths[n], self._result_sizes[n]) for n in names])
        return self._hashes

    def _forget_hashes(self) -> None:
        if self._hashes is not None:
            self._hashes.cancel()
            self._hashes = None

    # --- channel ------------------------------------------------------------------------------------
    def _send(self, send: rx.Send) -> None:
        """Send a control frame if the channel is still open; never raises."""
        if not self._writer.is_open:
            return
        try:
            self._writer.send_frame(send.frame)
        except Exception:
            log.exception("could not send %r frame", send.frame.TYPE)

    def _release(self) -> None:
        self._close_sink()
        if self._sending is not None:
            self._sending.cancel()
        self._forget_hashes()
        off(self.channel, "message", self._on_message)
        off(self.channel, "close", self._on_close)
        self._writer.detach()
