"""Random frame sequences against the worker's transfer core (in-memory shell): duplicates, truncations, resumes."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from support.transfer_sim import Disk, feed, restored, sha

from fsm_worker.protocol.transfer import receiver as rx
from fsm_worker.protocol.transfer.errors import FrameCode, FrameError
from fsm_worker.protocol.transfer.frames import (
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
from fsm_worker.protocol.transfer.worker import WorkerTransferCore

NAMES = ["a", "b", "c", "d"]
CONTENTS = [b"", b"x", b"hello", b"0123456789", b"abcdefghijklmnop"]
MAX_BYTES = 30
MAX_FILES = 3


class TransferMachine(RuleBasedStateMachine):
    """A client that follows the protocol most of the time, and a channel that drops now and then."""

    def __init__(self) -> None:
        super().__init__()
        self.disk = Disk()
        self.core = self._new_core()
        self.acked: dict[str, bytes] = {}  # name -> content the worker acknowledged or had (have)
        self.current: tuple[str, bytes] | None = None  # the upload the client believes is open
        self.sent_offset = 0
        self.corrupt = False  # garbage went into the open upload
        self.committed = False

    def _new_core(self) -> WorkerTransferCore:
        committed = getattr(self, "committed", False)
        core = WorkerTransferCore(rx.UploadLimits(MAX_BYTES, MAX_FILES), committed=committed)
        assert feed(core, self.disk, restored(self.disk)) == []
        return core

    def _frame(self, frame: Frame) -> Frame:
        """A control frame gets exactly one reply frame."""
        replies = feed(self.core, self.disk, rx.FrameIn(frame))
        assert len(replies) == 1, (frame, replies)
        return replies[0]

    def _announce(self, put: Put, content: bytes, honest: bool) -> Frame:
        """A put, and the proof if challenged (the real bytes' proof when ``honest``)."""
        reply = self._frame(put)
        if isinstance(reply, Prove):
            assert content in self.disk.store.values()
            proof = sha(reply.nonce.encode() + content) if honest else sha(b"guess")
            reply = self._frame(Proof(name=put.name, sha256=proof))
            assert isinstance(reply, Have) == honest  # no proof, no content
        return reply

    @rule(
        name=st.sampled_from(NAMES),
        content=st.sampled_from(CONTENTS),
        restart=st.booleans(),
        honest=st.booleans(),
    )
    def put(self, name: str, content: bytes, restart: bool, honest: bool) -> None:
        """``honest=False``: a client that knows only the sha256 and size answers a ``prove``."""
        reply = self._announce(
            Put(name=name, size=len(content), sha256=sha(content), restart=restart), content, honest
        )
        self.current = None
        if self.committed:
            assert isinstance(reply, Error) and reply.code == FrameCode.COMMITTED
        elif isinstance(reply, Have):
            self.acked[name] = content
        elif isinstance(reply, Ready):
            assert reply.offset <= len(content)
            if restart:
                assert reply.offset == 0
            if reply.offset:
                partial = bytes(self.disk.partials[sha(content)])
                assert reply.prefix_sha256 == sha(partial[: reply.offset])  # the truth about its partial
                if reply.prefix_sha256 != sha(content[: reply.offset]):  # the client declines, as it does
                    put = Put(name=name, size=len(content), sha256=sha(content), restart=True)
                    again = self._announce(put, content, honest)
                    assert isinstance(again, Ready) and again.offset == 0
                    reply = again
            self.current, self.sent_offset, self.corrupt = (name, content), reply.offset, False
        else:
            assert isinstance(reply, Error) and reply.code in (FrameCode.TOO_LARGE, FrameCode.TOO_MANY_FILES)

    @precondition(lambda self: self.current is not None and not self.corrupt)
    @rule(size=st.integers(1, 8))
    def send_bytes(self, size: int) -> None:
        assert self.current is not None
        _, content = self.current
        chunk = content[self.sent_offset : self.sent_offset + size]
        if chunk:
            assert feed(self.core, self.disk, rx.ChunkIn(chunk)) == []
            self.sent_offset += len(chunk)

    @precondition(lambda self: self.current is not None and not self.corrupt)
    @rule()
    def send_rest_and_end(self) -> None:
        assert self.current is not None
        name, content = self.current
        if content[self.sent_offset :]:
            assert feed(self.core, self.disk, rx.ChunkIn(content[self.sent_offset :])) == []
            self.sent_offset = len(content)
        self.end(name)

    @precondition(
        lambda self: self.current is not None and not self.corrupt and len(self.current[1]) > self.sent_offset
    )
    @rule(flip=st.integers(0, 255))
    def send_wrong_bytes_and_end(self, flip: int) -> None:
        """The right number of bytes with one of them wrong: the hash must catch it."""
        assert self.current is not None
        name, content = self.current
        rest = bytearray(content[self.sent_offset :])
        rest[0] ^= flip or 1
        assert feed(self.core, self.disk, rx.ChunkIn(bytes(rest))) == []
        self.corrupt = True
        self.end(name)

    @rule(data=st.binary(min_size=1, max_size=20))
    def send_garbage_chunk(self, data: bytes) -> None:
        replies = feed(self.core, self.disk, rx.ChunkIn(data))
        assert len(replies) <= 1
        if self.current is not None and replies == []:
            self.corrupt = True  # the bytes went into the file: it will not verify
        assert all(isinstance(r, Error) for r in replies)

    @rule(name=st.sampled_from(NAMES))
    def end(self, name: str) -> None:
        reply = self._frame(End(name=name))
        current, self.current = self.current, None
        if isinstance(reply, Ack):  # only ever for the open upload with verified bytes
            assert current is not None and current[0] == name
            assert reply == Ack(name=name, size=len(current[1]), sha256=sha(current[1]))
            self.acked[name] = current[1]
            return
        assert isinstance(reply, Error)
        if current is None or current[0] != name:
            self.current = current  # an end for another file changes nothing
            assert reply.code == FrameCode.UNEXPECTED
        else:
            assert self.corrupt or self.sent_offset != len(current[1]), reply
            assert reply.code in (FrameCode.SIZE_MISMATCH, FrameCode.HASH_MISMATCH)

    @rule(now=st.integers(0, 5))
    def commit(self, now: int) -> None:
        if now:
            return  # commit rarely, so that most runs upload for a while first
        reply = self._frame(Commit())
        if self.committed:
            assert isinstance(reply, Error) and reply.code == FrameCode.COMMITTED
        elif self.current is not None:
            assert isinstance(reply, Error) and reply.code == FrameCode.BUSY
        else:
            assert reply == Committed(files=sorted(self.disk.inputs))
            self.committed = True

    @rule()
    def bad_frame(self) -> None:
        replies = feed(self.core, self.disk, rx.BadFrameIn(FrameError("control frame is not JSON")))
        assert [r.code for r in replies if isinstance(r, Error)] == [FrameCode.BAD_FRAME]

    @rule()
    def drop_channel(self) -> None:
        """The channel closes; a new endpoint for the job starts from what is on disk."""
        self.core = self._new_core()
        self.current = None

    @invariant()
    def disk_matches_what_was_acknowledged(self) -> None:
        self.core.validate_state()
        for name, content in self.disk.inputs.items():
            assert self.acked.get(name) == content  # nothing lands in inputs/ unverified
        receiver = self.core.receiver
        assert receiver.inputs == {n: len(d) for n, d in self.disk.inputs.items()}
        assert len(self.disk.inputs) <= MAX_FILES
        # A file being replaced keeps its bytes until its successor commits (a re-put of a name is allowed
        # within the limit), so the disk may hold at most one input file's worth above the cap.
        replaced = max(map(len, self.disk.inputs.values()), default=0)
        assert (
            sum(map(len, self.disk.inputs.values())) + sum(map(len, self.disk.partials.values()))
            <= MAX_BYTES + replaced
        )
        for digest, part in self.disk.partials.items():
            assert receiver.partials.get(digest, len(part)) == len(part)


TransferMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestTransferCore = TransferMachine.TestCase
