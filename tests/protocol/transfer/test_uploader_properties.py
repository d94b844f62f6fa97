"""The client's upload core under hypothesis.

1. Against the worker's real transfer core (in-memory disk, frames encoded and parsed on the way):
   whatever the worker already holds (nothing, a good partial, a partial with other bytes, the content
   in its store) and wherever the channel drops, uploading again over a new channel ends with every
   file in place, resends at most one chunk per drop, and the commit names exactly the files; the put
   of the next file goes out right behind each end.
2. Against an arbitrary worker (any reply, any time, any task answer, the clock, the channel's close):
   a reference model checks that every operation ends exactly once, never while a task of the shell is
   still running, that frames go out only while nothing else runs and in the protocol's order, and that
   an answer nobody waits for changes nothing.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from support.transfer_sim import Disk, feed, restored, sha

from fsm_worker.protocol.transfer import receiver as rx
from fsm_worker.protocol.transfer import uploader_steps as up
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
    encode_frame,
    parse_frame,
)
from fsm_worker.protocol.transfer.uploader import UploadSender
from fsm_worker.protocol.transfer.uploader_phases import TASKS, WAITS
from fsm_worker.protocol.transfer.worker import WorkerTransferCore

NAMES = ["a", "b", "c", "d"]


def wire(frame: Frame) -> Frame:
    """The frame as the other side parses it."""
    return parse_frame(encode_frame(frame))


@attrs.define
class Channel:
    """One data channel between the client's core and a fresh worker core over a shared disk."""

    disk: Disk
    contents: dict[str, bytes]
    chunk_size: int
    drop_at: int | None  # the channel drops on the client's message number ``drop_at`` (lost)
    sent_bytes: dict[str, int]  # chunk bytes the client handed to any channel, per file
    client: UploadSender = attrs.Factory(lambda: UploadSender(reply_timeout=10.0))
    worker: WorkerTransferCore = attrs.Factory(lambda: WorkerTransferCore(rx.UploadLimits(10**6, 100)))
    messages: int = 0
    closed: bool = False
    to_client: deque[Frame | None] = attrs.Factory(deque)  # None: the close
    task: up.UploaderEvent | list[Any] | None = (
        None  # an answer to deliver, or a stream [index, offset, done]
    )
    abort: bool = False
    names: list[str] = attrs.Factory(list)
    frames: list[Frame] = attrs.Factory(list)  # the control frames the client sent, in order
    outcome: up.UploadDone | up.CommitDone | up.OperationFailed | None = None

    def __attrs_post_init__(self) -> None:
        assert feed(self.worker, self.disk, restored(self.disk)) == []

    def _message(self, text: str | bytes) -> bool:
        """The client sends one message; ``False`` when the drop takes it."""
        self.messages += 1
        if self.drop_at is not None and self.messages >= self.drop_at and not self.closed:
            self.closed = True
            self.to_client.clear()  # in flight, lost
            self.to_client.append(None)
            return False
        event: rx.ReceiverEvent = rx.FrameIn(parse_frame(text)) if isinstance(text, str) else rx.ChunkIn(text)
        for reply in feed(self.worker, self.disk, event):
            self.to_client.append(wire(reply))
        return True

    def feed(self, event: up.UploaderEvent) -> None:
        events: deque[up.UploaderEvent] = deque([event])
        while events:
            for instruction in self.client.handle(events.popleft(), 0.0):
                answer = self._do(instruction)
                if answer is not None:
                    events.append(answer)
            self.client.validate_state()

    def _do(self, instruction: up.UploaderInstruction) -> up.UploaderEvent | None:
        if isinstance(instruction, up.SendFrame):
            if self.closed:
                return up.SendFailed("data channel is closed")
            self.frames.append(instruction.frame)
            self._message(encode_frame(instruction.frame))
        elif isinstance(instruction, up.ComputeProof):
            content = self.contents[self.names[instruction.index]]
            self.task = up.ProofComputed(sha(instruction.nonce.encode() + content))
        elif isinstance(instruction, up.HashPrefix):
            content = self.contents[self.names[instruction.index]]
            self.task = up.PrefixHashed(sha(content[: instruction.offset]))
        elif isinstance(instruction, up.StreamFile):
            assert self.task is None
            self.task, self.abort = [instruction.index, instruction.offset, instruction.offset, 0, 0], False
        elif isinstance(instruction, up.AbortStream):
            self.abort = True
        elif isinstance(instruction, (up.UploadDone, up.CommitDone, up.OperationFailed)):
            assert self.task is None, "an operation ends only when no task runs"
            assert self.outcome is None
            self.outcome = instruction
        return None

    def _stream_step(self, stream: list[Any]) -> None:
        index, offset, done, chunk_bytes, chunks = stream
        name = self.names[index]
        content = self.contents[name]
        if done >= len(content) or done < offset:
            self.task = None
            self.feed(up.StreamEnded(chunk_bytes, chunks))
            return
        if self.closed:
            self.task = None
            self.feed(up.TaskFailed(FrameCode.CHANNEL_CLOSED, "data channel is closed", channel_closed=True))
            return
        data = content[done : done + self.chunk_size]
        self._message(data)
        self.sent_bytes[name] = self.sent_bytes.get(name, 0) + len(data)
        stream[2:] = [done + len(data), chunk_bytes + len(data), chunks + 1]
        self.feed(up.ChunkSent(done + len(data)))
        if self.abort:
            self.task = None
            self.feed(up.StreamEnded(stream[3], stream[4], aborted=True))

    def run(self, event: up.UploadRequested | up.CommitRequested, data: st.DataObject) -> Any:
        """Start an operation and deliver replies and task answers in an order hypothesis picks."""
        if isinstance(event, up.UploadRequested):
            self.names = [file.name for file in event.files]
        self.outcome = None
        self.feed(event)
        while self.outcome is None:
            choices = (["reply"] if self.to_client else []) + (["task"] if self.task is not None else [])
            assert choices, f"stuck in {self.client.phase}"
            if data.draw(st.sampled_from(choices)) == "reply":
                frame = self.to_client.popleft()
                self.feed(up.ChannelClosed() if frame is None else up.FrameIn(frame))
            elif isinstance(self.task, list):
                self._stream_step(self.task)
            else:
                answer, self.task = self.task, None
                assert answer is not None
                self.feed(answer)
        return self.outcome


@st.composite
def situations(draw: st.DrawFn) -> tuple[dict[str, bytes], Disk, list[int]]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    contents = {name: draw(st.binary(max_size=40)) for name in names}
    disk = Disk()
    for content in contents.values():
        held = draw(st.sampled_from(["nothing", "partial", "other partial", "store"]))
        cut = draw(st.integers(0, len(content)))
        if held == "partial":
            disk.partials[sha(content)] = bytearray(content[:cut])
        elif held == "other partial" and cut:
            disk.partials[sha(content)] = bytearray(b"\xff" * cut)
        elif held == "store":
            disk.store[sha(content)] = content
    drops = draw(st.lists(st.integers(1, 25), max_size=3))
    return contents, disk, drops


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(situation=situations(), chunk_size=st.integers(1, 16), data=st.data())
def test_uploads_through_drops_end_with_every_file_in_place(
    situation: tuple[dict[str, bytes], Disk, list[int]], chunk_size: int, data: st.DataObject
) -> None:
    contents, disk, drops = situation
    files = tuple(up.LocalFile(name, len(content), sha(content)) for name, content in contents.items())
    sent_bytes: dict[str, int] = {}
    drops_hit = 0
    outcome: Any = None
    for attempt in range(len(drops) + 1):
        drop_at = drops[attempt] if attempt < len(drops) else None
        channel = Channel(disk, contents, chunk_size, drop_at, sent_bytes)
        outcome = channel.run(up.UploadRequested(files), data)
        drops_hit += channel.closed
        # pipelined: what follows an end at once is the next file's put (the ack is not waited for)
        for sent, after in zip(channel.frames, channel.frames[1:], strict=False):
            if isinstance(sent, End):
                following = files[[file.name for file in files].index(sent.name) + 1]
                assert isinstance(after, Put) and (after.name, after.restart) == (following.name, False)
        if isinstance(outcome, up.UploadDone):
            break
        assert isinstance(outcome, up.OperationFailed), outcome
        assert outcome.kind is up.FailureKind.CHANNEL_CLOSED, outcome  # only a drop stops an honest upload
        assert channel.closed
    assert isinstance(outcome, up.UploadDone)
    assert disk.inputs == contents
    assert [file.name for file in outcome.files] == list(contents)
    for file in outcome.files:
        if file.status is up.UploadStatus.DEDUPED:
            assert file.bytes_sent == 0
        elif file.status is up.UploadStatus.SENT:
            assert file.bytes_sent == file.size
        else:
            assert 0 <= file.bytes_sent < file.size
    # a resume sends only what the worker does not hold verified: at most one chunk more per drop
    assert sum(sent_bytes.values()) <= sum(map(len, contents.values())) + drops_hit * chunk_size
    commit = Channel(disk, contents, chunk_size, None, sent_bytes).run(up.CommitRequested(), data)
    assert commit == up.CommitDone(tuple(sorted(contents)))
    assert disk.commits == [tuple(sorted(contents))]


# --- against an arbitrary worker ---------------------------------------------------------------------------
CONTENT = {name: name.encode() * 7 for name in NAMES}
LOCAL = {name: up.LocalFile(name, len(CONTENT[name]), sha(CONTENT[name])) for name in NAMES}
HEX = st.text("0123456789abcdef", min_size=64, max_size=64)
names = st.sampled_from(NAMES)
replies = st.one_of(
    st.builds(Ready, name=names, offset=st.integers(0, 30), prefix_sha256=st.none() | HEX),
    st.builds(Have, name=names, size=st.integers(0, 30), sha256=HEX),
    st.builds(Prove, name=names, nonce=st.text("0123456789abcdef", min_size=32, max_size=32)),
    st.sampled_from([Ack(name=n, size=f.size, sha256=f.sha256) for n, f in LOCAL.items()]),
    st.builds(Ack, name=names, size=st.integers(0, 30), sha256=HEX),
    st.builds(Committed, files=st.lists(names, max_size=3)),
    st.builds(
        Error,
        code=st.sampled_from([FrameCode.TOO_LARGE, FrameCode.UNEXPECTED, FrameCode.IO_ERROR]),
        message=st.just("refused"),
        name=st.none() | names,
        ref=st.sampled_from([None, CHUNK_REF, "put", "end"]),
    ),
)


def snapshot(core: UploadSender) -> str:
    """Everything the core holds, comparable (an exception inside a queued bad frame compares by repr)."""
    return repr(sorted(vars(core).items()))


TERMINAL = (up.UploadDone, up.CommitDone, up.OperationFailed)
TASK_STEPS = (up.ComputeProof, up.HashPrefix, up.StreamFile)


class ArbitraryWorker(RuleBasedStateMachine):
    """Any event at any time; a reference model written from the protocol's rules, not from the core."""

    def __init__(self) -> None:
        super().__init__()
        self.core = UploadSender(reply_timeout=10.0)
        self.now = 0.0
        self.op: str | None = None  # "upload" | "commit" while an operation is open
        self.files: tuple[up.LocalFile, ...] = ()
        self.task: up.UploaderInstruction | None = None  # the task instruction the shell is running
        self.aborted = False
        self.sent: list[Frame] = []  # frames of the open operation
        self.streamed: dict[int, int] = {}  # file index -> chunk bytes reported for it
        self.closed = False

    def _step(self, event: up.UploaderEvent) -> list[up.UploaderInstruction]:
        out = self.core.handle(event, self.now)
        self.core.validate_state()
        for n, instruction in enumerate(out):
            assert self.op is not None or isinstance(instruction, up.Ignored), (event, out)
            if isinstance(instruction, up.SendFrame):
                assert self.task is None, "nothing is sent while a task runs"
                self.sent.append(instruction.frame)
            elif isinstance(instruction, TASK_STEPS):
                assert self.task is None, "one task at a time"
                assert self.op == "upload"
                self.task, self.aborted = instruction, False
            elif isinstance(instruction, up.AbortStream):
                assert isinstance(self.task, up.StreamFile) and not self.aborted
                self.aborted = True
            elif isinstance(instruction, up.UploadProgress):
                assert 0 <= instruction.done <= instruction.total == sum(f.size for f in self.files)
            elif isinstance(instruction, TERMINAL):
                assert n == len(out) - 1, "nothing follows the end of an operation"
                assert self.task is None, "an operation ends only when no task runs"
                self._check_outcome(instruction)
                self.op, self.sent, self.streamed = None, [], {}
        return out

    def _check_outcome(self, outcome: up.UploadDone | up.CommitDone | up.OperationFailed) -> None:
        if isinstance(outcome, up.CommitDone):
            assert self.op == "commit" and self.sent == [Commit()]
        elif isinstance(outcome, up.UploadDone):
            assert self.op == "upload"
            assert [f.name for f in outcome.files] == [f.name for f in self.files]
            for index, file in enumerate(outcome.files):
                assert (file.size, file.sha256) == (self.files[index].size, self.files[index].sha256)
                assert file.bytes_sent == self.streamed.get(index, 0)
                assert (file.status is up.UploadStatus.DEDUPED) <= (file.bytes_sent == 0)
        if self.op == "upload":
            self._check_wire_order()

    def _check_wire_order(self) -> None:
        """put(f) [proof(f)] [put(f, restart) [proof(f)]] [end(f)] per file, files in order."""
        expected = iter(self.files)
        current: up.LocalFile | None = None
        puts = 0
        for frame in self.sent:
            if isinstance(frame, Put) and not frame.restart:
                current, puts = next(expected), 1
                assert (frame.name, frame.size, frame.sha256) == (current.name, current.size, current.sha256)
            elif isinstance(frame, Put):
                assert current is not None and frame.name == current.name and puts == 1
                puts = 2
            else:
                assert isinstance(frame, (Proof, End)) and current is not None
                assert frame.name == current.name

    @precondition(lambda self: self.op is None)
    @rule(chosen=st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    def request_upload(self, chosen: list[str]) -> None:
        self.files = tuple(LOCAL[name] for name in chosen)
        self.op, self.sent, self.streamed = "upload", [], {}
        self._step(up.UploadRequested(self.files))

    @precondition(lambda self: self.op is None)
    @rule()
    def request_commit(self) -> None:
        self.op, self.sent, self.files = "commit", [], ()
        self._step(up.CommitRequested())

    @precondition(lambda self: self.op is not None)
    @rule(chosen=st.lists(st.sampled_from(NAMES), max_size=2))
    def request_while_busy_is_refused(self, chosen: list[str]) -> None:
        before = snapshot(self.core)
        out = self.core.handle(up.UploadRequested(tuple(LOCAL[n] for n in chosen)), self.now)
        out += self.core.handle(up.CommitRequested(), self.now)
        assert all(isinstance(i, up.Ignored) for i in out) and len(out) == 2
        assert snapshot(self.core) == before

    @rule(reply=replies | st.none())
    def any_reply(self, reply: Frame | None) -> None:
        """Any reply, or a frame that does not parse (``None``)."""
        self._step(
            up.BadFrameIn(FrameError("type: unknown frame type 'warp'"))
            if reply is None
            else up.FrameIn(reply)
        )

    @rule(data=st.data())
    def fitting_reply(self, data: st.DataObject) -> None:
        """A reply the open wait accepts (an honest worker's), so that uploads get far."""
        phase = self.core.phase
        if phase not in WAITS:
            return  # no wait open: a reply now would only be queued
        if phase.value == "committing":
            self._step(up.FrameIn(Committed(files=NAMES)))
            return
        file = self.files[self.core.index]
        content = CONTENT[file.name]
        if phase.value == "acking":
            self._step(up.FrameIn(Ack(name=file.name, size=file.size, sha256=file.sha256)))
            return
        offset = data.draw(st.sampled_from([0, 0, 3, file.size]))
        good = data.draw(st.booleans())
        prefix = sha(content[:offset] if good else b"other") if offset else None
        options: list[Frame] = [
            Ready(name=file.name, offset=offset, prefix_sha256=prefix),
            Have(name=file.name, size=file.size, sha256=file.sha256),
        ]
        if phase.value == "announced":
            options.append(Prove(name=file.name, nonce="0" * 32))
        self._step(up.FrameIn(data.draw(st.sampled_from(options))))

    @rule(data=st.data())
    def fitting_reply_again(self, data: st.DataObject) -> None:
        """(The same rule twice: honest replies twice as often as the disruptive rules.)"""
        self.fitting_reply(data)

    @precondition(lambda self: not self.closed)
    @rule(send=st.booleans())
    def channel_closes(self, send: bool) -> None:
        """The close event, or a send that finds the channel closed (the event comes later)."""
        if send:
            self._step(up.SendFailed("data channel is closed"))
        else:
            self.closed = True
            self._step(up.ChannelClosed())

    @precondition(lambda self: self.closed and self.op is None)
    @rule()
    def new_channel(self) -> None:
        """The caller goes on over a new channel: a new endpoint, a new core."""
        self.core, self.closed = UploadSender(reply_timeout=10.0), False

    @rule(seconds=st.sampled_from([1.0, 1.0, 9.0, 30.0]))
    def clock(self, seconds: float) -> None:
        self.now += seconds
        deadline = self.core.next_deadline()
        out = self._step(up.TimerFired())
        if deadline is not None and self.now >= deadline:
            assert out == [
                up.OperationFailed(up.FailureKind.LOCAL, FrameCode.TIMEOUT, "no reply within 10 s")
            ]
        else:
            assert out == []

    @precondition(lambda self: isinstance(self.task, (up.ComputeProof, up.HashPrefix)))
    @rule(good=st.booleans())
    def task_answers(self, good: bool) -> None:
        task, self.task = self.task, None
        if isinstance(task, up.ComputeProof):
            self._step(up.ProofComputed(sha(task.nonce.encode() + b"?")))
        else:
            assert isinstance(task, up.HashPrefix)
            prefix = self.core.ready.prefix_sha256 if self.core.ready is not None else None
            self._step(up.PrefixHashed(prefix if good and prefix else "0" * 64))

    @precondition(lambda self: isinstance(self.task, up.StreamFile))
    @rule(size=st.integers(1, 10))
    def chunk_sent(self, size: int) -> None:
        task = self.task
        assert isinstance(task, up.StreamFile)
        done = min(task.size, max(task.offset, 0) + self.streamed.get(task.index, 0) + size)
        sent = done - task.offset - self.streamed.get(task.index, 0)
        if sent <= 0:
            return
        self.streamed[task.index] = self.streamed.get(task.index, 0) + sent
        self._step(up.ChunkSent(done))

    @precondition(lambda self: isinstance(self.task, up.StreamFile))
    @rule()
    def stream_ends(self) -> None:
        task = self.task
        assert isinstance(task, up.StreamFile)
        self.task = None
        aborted = self.aborted
        out = self._step(up.StreamEnded(self.streamed.get(task.index, 0), 1, aborted=aborted))
        assert not aborted or not any(isinstance(i, up.SendFrame) for i in out), "no end after an abort"

    @precondition(lambda self: self.task is not None)
    @rule(closed=st.booleans())
    def task_fails(self, closed: bool) -> None:
        self.task = None
        out = self._step(up.TaskFailed(FrameCode.IO_ERROR, "disk", channel_closed=closed))
        assert len(out) == 1 and isinstance(out[0], up.OperationFailed)

    @precondition(lambda self: self.op is not None)
    @rule()
    def abandon(self) -> None:
        assert self._step(up.Abandoned()) == []
        self.op, self.task, self.sent, self.streamed = None, None, [], {}

    @rule(
        stray=st.sampled_from(
            [up.ProofComputed("1" * 64), up.PrefixHashed("1" * 64), up.ChunkSent(1), up.StreamEnded(1, 1)]
        )
    )
    def answer_nobody_waits_for(self, stray: up.UploaderEvent) -> None:
        expected = {
            up.ProofComputed: up.ComputeProof,
            up.PrefixHashed: up.HashPrefix,
            up.ChunkSent: up.StreamFile,
            up.StreamEnded: up.StreamFile,
        }[type(stray)]
        if isinstance(self.task, expected):
            return
        before = snapshot(self.core)
        assert self.core.handle(stray, self.now) == []
        assert snapshot(self.core) == before

    @invariant()
    def model_agrees(self) -> None:
        assert self.core.busy == (self.op is not None)
        assert (self.core.phase in TASKS) == (self.task is not None)
        if self.op == "commit":
            assert self.core.phase in WAITS


ArbitraryWorker.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_an_arbitrary_worker = ArbitraryWorker.TestCase
