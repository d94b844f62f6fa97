"""An in-memory shell for the worker transfer core: answers every instruction like the real one would."""

from __future__ import annotations

import hashlib
from collections import deque

import attrs

from fsm_worker.protocol.transfer import receiver as rx
from fsm_worker.protocol.transfer import sender as tx
from fsm_worker.protocol.transfer.errors import FrameCode
from fsm_worker.protocol.transfer.frames import Frame
from fsm_worker.protocol.transfer.worker import WorkerEvent, WorkerInstruction, WorkerTransferCore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@attrs.define
class Disk:
    """The job directory and the worker's content store, in memory."""

    inputs: dict[str, bytes] = attrs.Factory(dict)
    partials: dict[str, bytearray] = attrs.Factory(dict)
    store: dict[str, bytes] = attrs.Factory(dict)
    results: dict[str, bytes] | None = None
    open_sha: str | None = None
    fail_writes: bool = False
    refuse_commit: bool = False
    commits: list[tuple[str, ...]] = attrs.Factory(list)


def restored(disk: Disk) -> rx.Restored:
    return rx.Restored(
        {n: len(d) for n, d in disk.inputs.items()}, {h: len(d) for h, d in disk.partials.items()}
    )


def answer(disk: Disk, instruction: WorkerInstruction, sent: list[Frame]) -> WorkerEvent | None:
    """Carry out one instruction on ``disk``; frames sent are appended to ``sent``."""
    if isinstance(instruction, rx.Send):
        sent.append(instruction.frame)
    elif isinstance(instruction, rx.Probe):
        in_store = disk.store.get(instruction.sha256, b"x" * (instruction.size + 1))
        in_store_ok = len(in_store) == instruction.size
        return rx.Probed(in_store_ok, len(disk.partials.get(instruction.sha256, b"")), "0" * 31 + "1")
    elif isinstance(instruction, rx.CheckProof):
        content = disk.store.get(instruction.sha256)
        return rx.ProofChecked(
            content is not None and sha(instruction.nonce.encode() + content) == instruction.proof
        )
    elif isinstance(instruction, rx.Materialize):
        content = disk.store.get(instruction.sha256)
        if content is None:
            return rx.Materialized(False)
        disk.inputs[instruction.name] = content
        return rx.Materialized(True)
    elif isinstance(instruction, rx.OpenUpload):
        part = disk.partials.setdefault(instruction.sha256, bytearray())
        del part[instruction.offset :]
        disk.open_sha = instruction.sha256
        return rx.UploadOpened(sha(bytes(part)) if instruction.offset else None)
    elif isinstance(instruction, rx.WriteChunk):
        if disk.fail_writes:
            return rx.Failed(FrameCode.IO_ERROR, "OSError: No space left on device")
        assert disk.open_sha is not None
        disk.partials[disk.open_sha] += instruction.data
    elif isinstance(instruction, rx.CloseUpload):
        disk.open_sha = None
    elif isinstance(instruction, rx.FinishUpload):
        assert disk.open_sha is not None
        digest = sha(bytes(disk.partials[disk.open_sha]))
        disk.open_sha = None
        return rx.UploadFinished(digest)
    elif isinstance(instruction, rx.DiscardPartial):
        disk.partials.pop(instruction.sha256, None)
    elif isinstance(instruction, rx.PlaceInput):
        disk.inputs[instruction.name] = bytes(disk.partials.pop(instruction.sha256))
        return rx.InputPlaced()
    elif isinstance(instruction, rx.AddToStore):
        disk.store[instruction.sha256] = disk.inputs[instruction.name]
    elif isinstance(instruction, rx.RunCommit):
        if disk.refuse_commit:
            return rx.Failed(FrameCode.COMMIT_FAILED, "commit refused: job was cancelled")
        disk.commits.append(instruction.names)
        return rx.CommitAccepted()
    elif isinstance(instruction, rx.RemovePartials):
        disk.partials.clear()
    elif isinstance(instruction, tx.ListResults):
        if disk.results is None:
            return tx.ResultsListed(None)
        return tx.ResultsListed(
            tuple(tx.ResultEntry(n, tx.EntryKind.FILE, len(d)) for n, d in disk.results.items())
        )
    elif isinstance(instruction, tx.HashResult):
        assert disk.results is not None
        return tx.ResultHashed(instruction.index, sha(disk.results[instruction.name]))
    elif isinstance(instruction, tx.StreamResult):
        assert disk.results is not None
        sent.append(Chunks(disk.results[instruction.name]))  # type: ignore[arg-type]
        return tx.ResultStreamed(instruction.index, instruction.size, 1 if instruction.size else 0)
    return None


@attrs.frozen
class Chunks:
    """Stands for the chunks of one result file in the list of sent frames."""

    data: bytes


def feed(core: WorkerTransferCore, disk: Disk, event: WorkerEvent) -> list[Frame]:
    """Feed ``event`` the way the shell does (answers fed back in order); returns the frames sent."""
    sent: list[Frame] = []
    events = deque([event])
    while events:
        for instruction in core.handle(events.popleft()):
            reply = answer(disk, instruction, sent)
            if reply is not None:
                events.append(reply)
        core.validate_state()
    return sent
