"""Events and instructions of the upload receiver (:mod:`fsm_worker.protocol.transfer.receiver`)."""

from __future__ import annotations

from typing import TypeAlias

import attrs

from fsm_worker.protocol.transfer.errors import FrameCode, FrameError
from fsm_worker.protocol.transfer.frames import Frame


# --- events: what the shell saw or did -------------------------------------------------------------------
@attrs.frozen
class Restored:
    """What an earlier endpoint for the job left on disk: input name → size, partial sha256 → size."""

    inputs: dict[str, int]
    partials: dict[str, int]


@attrs.frozen
class FrameIn:
    """A parsed control frame arrived."""

    frame: Frame


@attrs.frozen
class BadFrameIn:
    """A text message could not be parsed."""

    error: FrameError


@attrs.frozen
class ChunkIn:
    """A binary message arrived."""

    data: bytes


@attrs.frozen
class Probed:
    """Answer to :class:`Probe`: whether the store holds the content, and the partial's size."""

    in_store: bool
    partial_size: int
    nonce: str  # fresh random 32 hex digits for the proof of possession (the shell draws it)


@attrs.frozen
class ProofChecked:
    """Answer to :class:`CheckProof`."""

    ok: bool


@attrs.frozen
class Materialized:
    """Answer to :class:`Materialize`: ``False`` when the store entry vanished meanwhile."""

    ok: bool


@attrs.frozen
class UploadOpened:
    """Answer to :class:`OpenUpload`: the sha256 of bytes ``[0, offset)`` (``None`` at offset 0)."""

    prefix_sha256: str | None


@attrs.frozen
class UploadFinished:
    """Answer to :class:`FinishUpload`: the sha256 of all bytes received."""

    sha256: str


@attrs.frozen
class InputPlaced:
    """Answer to :class:`PlaceInput`: the verified file is in ``inputs/``."""


@attrs.frozen
class CommitAccepted:
    """Answer to :class:`RunCommit`: the host took the inputs."""


@attrs.frozen
class Failed:
    """An instruction failed (disk error, link refused, host refused the commit)."""

    code: FrameCode
    message: str


ReceiverEvent: TypeAlias = (
    Restored
    | FrameIn
    | BadFrameIn
    | ChunkIn
    | Probed
    | ProofChecked
    | Materialized
    | UploadOpened
    | UploadFinished
    | InputPlaced
    | CommitAccepted
    | Failed
)


# --- instructions: what the shell must do ------------------------------------------------------------
@attrs.frozen
class Send:
    """Send a control frame (dropped silently when the channel is already closed)."""

    frame: Frame


@attrs.frozen
class Probe:
    """Check the job dirs and the target, look ``sha256``/``size`` up in the store, measure the partial."""

    name: str
    size: int
    sha256: str


@attrs.frozen
class CheckProof:
    """Whether ``proof`` is the sha256 of ``nonce`` (ASCII) followed by the stored content of ``sha256``."""

    sha256: str
    size: int
    nonce: str
    proof: str


@attrs.frozen
class Materialize:
    """Link the store's content for ``sha256`` into ``inputs/name``."""

    name: str
    size: int
    sha256: str


@attrs.frozen
class OpenUpload:
    """Open (truncate to ``offset``) the partial of ``sha256``; hash its first ``offset`` bytes."""

    name: str
    size: int
    sha256: str
    offset: int


@attrs.frozen
class WriteChunk:
    """Append ``data`` to the open upload and hash it."""

    data: bytes


@attrs.frozen
class CloseUpload:
    """Close the open upload's file, keeping the partial (resumable)."""


@attrs.frozen
class FinishUpload:
    """Close the open upload's file and report its sha256."""


@attrs.frozen
class DiscardPartial:
    """Delete the partial of ``sha256`` (its bytes are wrong)."""

    sha256: str


@attrs.frozen
class PlaceInput:
    """Move the verified partial of ``sha256`` to ``inputs/name`` (refusing links)."""

    name: str
    sha256: str


@attrs.frozen
class AddToStore:
    """Share ``inputs/name`` (content ``sha256``) through the content store; failures are only logged."""

    name: str
    sha256: str


@attrs.frozen
class RunCommit:
    """Hand the inputs (``inputs/<name>`` for each name) to the host."""

    names: tuple[str, ...]


@attrs.frozen
class RemovePartials:
    """Delete the job's partial uploads."""


@attrs.frozen
class Progress:
    """``on_progress(name, done, size)``."""

    name: str
    done: int
    size: int


ReceiverInstruction: TypeAlias = (
    Send
    | Probe
    | CheckProof
    | Materialize
    | OpenUpload
    | WriteChunk
    | CloseUpload
    | FinishUpload
    | DiscardPartial
    | PlaceInput
    | AddToStore
    | RunCommit
    | RemovePartials
    | Progress
)
