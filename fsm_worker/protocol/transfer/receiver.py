"""The worker's upload receiver as a pure core: frames and IO results in, instructions out.

No asyncio, no disk, no channel. The shell (``shells/transfer/worker.py``) feeds every data-channel
message and the result of every instruction it carried out back in as an event, in order. Running
totals (bytes and files per job) live here, so a ``put`` never rescans the job directory.
"""

from __future__ import annotations

import attrs

from fsm_worker.protocol.transfer.errors import FrameCode, FrameError
from fsm_worker.protocol.transfer.frames import (
    CHUNK_REF,
    Ack,
    Commit,
    Committed,
    End,
    Error,
    Frame,
    Have,
    Proof,
    Prove,
    Put,
    Ready,
)
from fsm_worker.protocol.transfer.paths import check_name
from fsm_worker.protocol.transfer.stats import TransferStats
from fsm_worker.protocol.transfer.upload_limits import DEFAULT_MAX_INPUT_FILES, InputTally, UploadLimits
from fsm_worker.protocol.transfer.upload_steps import (
    AddToStore,
    BadFrameIn,
    CheckProof,
    ChunkIn,
    CloseUpload,
    CommitAccepted,
    DiscardPartial,
    Failed,
    FinishUpload,
    FrameIn,
    InputPlaced,
    Materialize,
    Materialized,
    OpenUpload,
    PlaceInput,
    Probe,
    Probed,
    Progress,
    ProofChecked,
    ReceiverEvent,
    ReceiverInstruction,
    RemovePartials,
    Restored,
    RunCommit,
    Send,
    UploadFinished,
    UploadOpened,
    WriteChunk,
)


@attrs.define
class _Upload:
    put: Put
    offset: int = 0
    done: int = 0


@attrs.define
class _Challenge:
    """A ``prove`` is out: the client must answer with ``proof`` before the content is shared."""

    put: Put
    nonce: str
    offset: int  # where an upload starts if the proof fails


@attrs.define
class _Pending:
    """The operation waiting for the shell's answer and the frame it answers."""

    kind: str  # "probe" | "check" | "materialize" | "open" | "finish" | "place" | "commit"
    put: Put | None = None
    offset: int = 0  # "check": where an upload starts if the proof fails


_REFS = {
    "probe": Put.TYPE,
    "check": Proof.TYPE,
    "materialize": Put.TYPE,
    "open": Put.TYPE,
    "finish": End.TYPE,
}
_REFS |= {"place": End.TYPE, "commit": Commit.TYPE}


class UploadReceiver:
    """Worker side of uploads and commit for one job.

    ``inputs`` / ``partials`` describe what an earlier endpoint for the job left on disk (name → size,
    sha256 → size); the shell measures them once at start. Events must be fed in order and the answer
    to an instruction before the next data-channel message (the shell awaits each).
    """

    def __init__(
        self,
        limits: UploadLimits,
        *,
        inputs: dict[str, int] | None = None,
        partials: dict[str, int] | None = None,
        committed: bool = False,
        stats: TransferStats | None = None,
    ) -> None:
        self.limits = limits
        self.tally = InputTally(inputs, partials)
        self.committed = committed
        self.stats = stats if stats is not None else TransferStats()
        self.upload: _Upload | None = None
        self.challenge: _Challenge | None = None
        self._pending: _Pending | None = None
        self._stray_reported = False

    @property
    def inputs(self) -> dict[str, int]:
        """The job's finished inputs: name → size."""
        return self.tally.inputs

    @property
    def partials(self) -> dict[str, int]:
        """The job's partial uploads: sha256 → bytes so far."""
        return self.tally.partials

    @property
    def input_bytes(self) -> int:
        return self.tally.input_bytes

    @property
    def partial_bytes(self) -> int:
        return self.tally.partial_bytes

    # --- entry point ---------------------------------------------------------------------------------
    def handle(self, event: ReceiverEvent) -> list[ReceiverInstruction]:
        """Feed one event; never raises (a refused event answers with an ``error`` frame)."""
        if isinstance(event, Restored):
            return self._restore(event)
        if isinstance(event, ChunkIn):
            return self._on_chunk(event.data)
        if isinstance(event, BadFrameIn):
            self._stray_reported = False
            return [self._error(event.error.code, str(event.error), event.error.name, None)]
        if isinstance(event, FrameIn):
            self._stray_reported = False
            return self._on_frame(event.frame)
        return self._on_answer(event)

    def validate_state(self) -> None:
        """Invariants (tests call this after every step)."""
        self.tally.validate()
        assert self.upload is None or self.challenge is None
        if self.upload is not None:
            assert not self.committed
            assert self.upload.offset <= self.upload.done <= self.upload.put.size
            assert self.partials.get(self.upload.put.sha256) == self.upload.done

    # --- frames --------------------------------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> list[ReceiverInstruction]:
        try:
            if self._pending is not None:  # the shell answers before the next message; guard anyway
                raise FrameError("the previous frame is still being handled", FrameCode.BUSY)
            challenge, self.challenge = self.challenge, None  # any next frame ends a challenge
            if isinstance(frame, Proof):
                return self._on_proof(frame, challenge)
            if isinstance(frame, Put):
                return self._on_put(frame)
            if isinstance(frame, End):
                return self._on_end(frame)
            if isinstance(frame, Commit):
                return self._on_commit()
            raise FrameError(f"frame type {frame.TYPE!r} is not accepted by the worker", FrameCode.UNEXPECTED)
        except FrameError as exc:
            return [self._error(exc.code, str(exc), exc.name or getattr(frame, "name", None), frame.TYPE)]

    def _on_put(self, put: Put) -> list[ReceiverInstruction]:
        if self.committed:
            raise FrameError("inputs are already committed", FrameCode.COMMITTED)
        check_name(put.name)
        out: list[ReceiverInstruction] = self._abandon()  # a new put abandons an open upload
        refusal = self.tally.refusal(put, self.limits)
        if refusal is not None:
            return [*out, self._error(refusal.code, str(refusal), put.name, Put.TYPE)]
        self._pending = _Pending("probe", put)
        return [*out, Probe(put.name, put.size, put.sha256)]

    def _on_proof(self, proof: Proof, challenge: _Challenge | None) -> list[ReceiverInstruction]:
        if challenge is None or proof.name != challenge.put.name:
            raise FrameError(f"proof for {proof.name!r} without a prove for it", FrameCode.UNEXPECTED)
        put = challenge.put
        self._pending = _Pending("check", put, challenge.offset)
        return [CheckProof(put.sha256, put.size, challenge.nonce, proof.sha256)]

    def _on_end(self, end: End) -> list[ReceiverInstruction]:
        upload = self.upload
        if upload is None or end.name != upload.put.name:
            raise FrameError(f"end of {end.name!r} without its upload in progress", FrameCode.UNEXPECTED)
        if upload.done != upload.put.size:
            self.upload = None
            return [
                CloseUpload(),
                self._error(
                    FrameCode.SIZE_MISMATCH,
                    f"{end.name!r}: received {upload.done} of {upload.put.size} bytes",
                    end.name,
                    End.TYPE,
                ),
            ]
        self._pending = _Pending("finish", upload.put)
        return [FinishUpload()]

    def _on_commit(self) -> list[ReceiverInstruction]:
        if self.committed:
            raise FrameError("inputs are already committed", FrameCode.COMMITTED)
        if self.upload is not None:
            raise FrameError(f"upload of {self.upload.put.name!r} is still in progress", FrameCode.BUSY)
        self._pending = _Pending("commit")
        return [RunCommit(tuple(sorted(self.inputs)))]

    def _on_chunk(self, data: bytes) -> list[ReceiverInstruction]:
        upload = self.upload
        if upload is None or self._pending is not None:
            self.stats.chunks_dropped += 1
            if self._stray_reported:
                return []  # one error per run of stray chunks, not one per chunk
            self._stray_reported = True
            return [
                self._error(
                    FrameCode.UNEXPECTED, "binary chunk without an upload in progress", None, CHUNK_REF
                )
            ]
        put = upload.put
        if upload.done + len(data) > put.size:
            message = f"{put.name!r}: chunk would exceed the announced size {put.size}"
            return [self._error(FrameCode.SIZE_MISMATCH, message, put.name, CHUNK_REF)]
        upload.done += len(data)
        self.tally.set_partial(put.sha256, upload.done)
        self.stats.chunk_bytes_received += len(data)
        self.stats.chunks_received += 1
        return [WriteChunk(data), Progress(put.name, upload.done, put.size)]

    # --- answers from the shell ----------------------------------------------------------------------
    def _on_answer(self, event: ReceiverEvent) -> list[ReceiverInstruction]:
        pending, self._pending = self._pending, None
        if isinstance(event, Failed) and pending is None and self.upload is not None:
            return self._write_failed(event)  # a WriteChunk failed (chunks have no pending answer)
        if pending is None:
            return []  # an answer nobody asked for (a shell bug); ignore it
        put = pending.put
        if isinstance(event, Failed):
            ref = _REFS[pending.kind]
            if pending.kind in ("finish", "place", "open"):
                self.upload = None
            return [self._error(event.code, event.message, put.name if put else None, ref)]
        if pending.kind == "probe" and isinstance(event, Probed) and put is not None:
            offset = 0 if event.partial_size > put.size or put.restart else event.partial_size
            if event.in_store:  # dedupe only for a client that proves it holds the bytes
                self.challenge = _Challenge(put, event.nonce, offset)
                return [Send(Prove(name=put.name, nonce=event.nonce))]
            return self._open(put, offset)
        if pending.kind == "check" and isinstance(event, ProofChecked) and put is not None:
            if not event.ok:
                return self._open(put, pending.offset)  # no proof, no content: upload it
            self._pending = _Pending("materialize", put)
            return [Materialize(put.name, put.size, put.sha256)]
        if pending.kind == "materialize" and isinstance(event, Materialized) and put is not None:
            if not event.ok:
                return self._open(put, 0)
            self.tally.set_partial(put.sha256, None)
            self.tally.set_input(put.name, put.size)
            self.stats.files_deduped += 1
            self.stats.bytes_skipped += put.size
            return [DiscardPartial(put.sha256), Send(Have(name=put.name, size=put.size, sha256=put.sha256))]
        if pending.kind == "open" and isinstance(event, UploadOpened) and put is not None:
            upload = self.upload
            assert upload is not None
            if upload.offset:
                self.stats.files_resumed += 1
                self.stats.bytes_skipped += upload.offset
            return [Send(Ready(name=put.name, offset=upload.offset, prefix_sha256=event.prefix_sha256))]
        if pending.kind == "finish" and isinstance(event, UploadFinished) and put is not None:
            self.upload = None
            if event.sha256 != put.sha256:
                self.tally.set_partial(put.sha256, None)
                message = f"{put.name!r}: sha256 {event.sha256} does not match the announced {put.sha256}"
                return [
                    DiscardPartial(put.sha256),
                    self._error(FrameCode.HASH_MISMATCH, message, put.name, End.TYPE),
                ]
            self._pending = _Pending("place", put)
            return [PlaceInput(put.name, put.sha256)]
        if pending.kind == "place" and isinstance(event, InputPlaced) and put is not None:
            self.tally.set_partial(put.sha256, None)
            self.tally.set_input(put.name, put.size)
            self.stats.files_received += 1
            # shared before the ack, so a put right after the ack can already be deduplicated
            return [
                AddToStore(put.name, put.sha256),
                Send(Ack(name=put.name, size=put.size, sha256=put.sha256)),
            ]
        if pending.kind == "commit" and isinstance(event, CommitAccepted):
            self.committed = True
            self.tally.clear_partials()
            return [RemovePartials(), Send(Committed(files=sorted(self.inputs)))]
        self._pending = pending  # not the answer we wait for: keep waiting
        return []

    def _open(self, put: Put, offset: int) -> list[ReceiverInstruction]:
        self.upload = _Upload(put, offset, offset)
        self.tally.set_partial(put.sha256, offset)
        self._pending = _Pending("open", put)
        return [OpenUpload(put.name, put.size, put.sha256, offset)]

    def _restore(self, event: Restored) -> list[ReceiverInstruction]:
        for name, size in event.inputs.items():
            self.tally.set_input(name, size)
        for sha256, size in event.partials.items():
            self.tally.set_partial(sha256, size)
        return []

    def _write_failed(self, event: Failed) -> list[ReceiverInstruction]:
        self.upload = None  # e.g. disk full: stop this upload, keep its partial
        return [CloseUpload(), self._error(event.code, event.message, None, CHUNK_REF)]

    def _abandon(self) -> list[ReceiverInstruction]:
        self.challenge = None
        if self.upload is None:
            return []
        self.upload = None
        return [CloseUpload()]

    def _error(self, code: str, message: str, name: str | None, ref: str | None) -> Send:
        self.stats.errors_sent += 1
        return Send(Error(code=code, message=message, name=name, ref=ref))


__all__ = [
    "DEFAULT_MAX_INPUT_FILES",
    "AddToStore",
    "BadFrameIn",
    "CheckProof",
    "ChunkIn",
    "CloseUpload",
    "CommitAccepted",
    "DiscardPartial",
    "Failed",
    "FinishUpload",
    "FrameIn",
    "InputPlaced",
    "Materialize",
    "Materialized",
    "OpenUpload",
    "PlaceInput",
    "Probe",
    "Probed",
    "Progress",
    "ProofChecked",
    "ReceiverEvent",
    "ReceiverInstruction",
    "RemovePartials",
    "Restored",
    "RunCommit",
    "Send",
    "UploadFinished",
    "UploadLimits",
    "UploadOpened",
    "UploadReceiver",
    "WriteChunk",
]
