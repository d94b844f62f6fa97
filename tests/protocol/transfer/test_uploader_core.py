"""The client's upload core without sockets or disk: exact instruction lists, one test per scenario."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from support.transfer_sim import sha

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
)
from fsm_worker.protocol.transfer.uploader import UploadSender, check_upload_names
from fsm_worker.protocol.transfer.uploader_phases import Phase

A = b"0123456789"
B = b"hello"
FA = up.LocalFile("a.txt", len(A), sha(A))
FB = up.LocalFile("b.txt", len(B), sha(B))
NONCE = "0" * 31 + "1"


def put(file: up.LocalFile, restart: bool = False) -> up.SendFrame:
    return up.SendFrame(Put(name=file.name, size=file.size, sha256=file.sha256, restart=restart))


def ack(file: up.LocalFile) -> up.FrameIn:
    return up.FrameIn(Ack(name=file.name, size=file.size, sha256=file.sha256))


def ready(file: up.LocalFile, offset: int = 0, prefix: str | None = None) -> up.FrameIn:
    return up.FrameIn(Ready(name=file.name, offset=offset, prefix_sha256=prefix))


def have(file: up.LocalFile) -> up.FrameIn:
    return up.FrameIn(Have(name=file.name, size=file.size, sha256=file.sha256))


def frame(f: Frame) -> up.FrameIn:
    return up.FrameIn(f)


class Core:
    """The core with a clock; every step checks the invariants."""

    def __init__(self, reply_timeout: float = 60.0) -> None:
        self.core = UploadSender(reply_timeout)
        self.now = 0.0

    def __call__(self, event: up.UploaderEvent) -> list[up.UploaderInstruction]:
        out = self.core.handle(event, self.now)
        self.core.validate_state()
        return out


def upload(*files: up.LocalFile) -> up.UploadRequested:
    return up.UploadRequested(files)


def test_a_fresh_file_is_put_streamed_ended_and_acknowledged() -> None:
    core = Core()
    assert core(upload(FA)) == [put(FA)]
    assert core.core.next_deadline() == 60.0
    assert core(ready(FA)) == [up.StreamFile(0, 0, 10)]
    assert core.core.next_deadline() is None  # no reply deadline while the bytes go out
    assert core(up.ChunkSent(4)) == [up.UploadProgress(4, 10)]
    assert core(up.ChunkSent(10)) == [up.UploadProgress(10, 10)]
    assert core(up.StreamEnded(10, 2)) == [up.SendFrame(End(name="a.txt"))]
    sent = up.UploadedFile("a.txt", 10, sha(A), up.UploadStatus.SENT, 10)
    assert core(ack(FA)) == [up.UploadDone((sent,))]  # progress 10 was already reported
    stats = core.core.stats
    assert (stats.chunk_bytes_sent, stats.chunks_sent, stats.files_sent) == (10, 2, 1)
    assert not core.core.busy and core.core.next_deadline() is None


def test_files_go_one_after_the_other_and_progress_covers_the_whole_upload() -> None:
    core = Core()
    assert core(upload(FA, FB)) == [put(FA)]
    assert core(have(FA)) == [up.UploadProgress(10, 15), put(FB)]
    assert core(ready(FB)) == [up.StreamFile(1, 0, 5)]
    assert core(up.ChunkSent(5)) == [up.UploadProgress(15, 15)]
    assert core(up.StreamEnded(5, 1)) == [up.SendFrame(End(name="b.txt"))]
    [done] = core(ack(FB))
    assert isinstance(done, up.UploadDone)
    assert [(f.name, f.status, f.bytes_sent) for f in done.files] == [
        ("a.txt", up.UploadStatus.DEDUPED, 0),
        ("b.txt", up.UploadStatus.SENT, 5),
    ]
    assert (core.core.stats.files_deduped, core.core.stats.bytes_skipped) == (1, 10)


def test_the_next_put_goes_out_behind_the_end_and_both_answers_come_back_together() -> None:
    core = Core()
    assert core(upload(FA, FB)) == [put(FA)]
    assert core(ready(FA)) == [up.StreamFile(0, 0, 10)]
    assert core(up.ChunkSent(10)) == [up.UploadProgress(10, 15)]
    assert core(up.StreamEnded(10, 1)) == [up.SendFrame(End(name="a.txt")), put(FB)]
    assert core.core.phase is Phase.ACKING and core.core.next_deadline() == 60.0
    assert core(ack(FA)) == []  # the answer to put(b) is awaited at once, with no second put
    assert core.core.phase is Phase.ANNOUNCED and core.core.index == 1  # type: ignore[comparison-overlap]
    assert core(ready(FB)) == [up.StreamFile(1, 0, 5)]
    core(up.ChunkSent(5))
    assert core(up.StreamEnded(5, 1)) == [up.SendFrame(End(name="b.txt"))]  # the last file: no put
    [done] = core(ack(FB))
    assert isinstance(done, up.UploadDone)
    assert [(f.name, f.status) for f in done.files] == [("a.txt", "sent"), ("b.txt", "sent")]


def test_the_answer_to_the_pipelined_put_may_be_a_challenge() -> None:
    core = Core()
    core(upload(FA, FB))
    core(ready(FA))
    assert core(up.StreamEnded(10, 1)) == [up.SendFrame(End(name="a.txt")), put(FB)]
    assert core(ack(FA)) == [up.UploadProgress(10, 15)]
    assert core(frame(Prove(name="b.txt", nonce=NONCE))) == [up.ComputeProof(1, NONCE)]
    assert core(up.ProofComputed("f" * 64)) == [up.SendFrame(Proof(name="b.txt", sha256="f" * 64))]
    assert core(have(FB))[-1] == up.UploadDone(
        (
            up.UploadedFile("a.txt", 10, sha(A), up.UploadStatus.SENT, 10),
            up.UploadedFile("b.txt", 5, sha(B), up.UploadStatus.DEDUPED, 0),
        )
    )


def test_without_pipelining_the_next_put_waits_for_the_ack() -> None:
    core = Core()
    core.core = UploadSender(60.0, pipeline=False)
    core(upload(FA, FB))
    core(ready(FA))
    assert core(up.StreamEnded(10, 1)) == [up.SendFrame(End(name="a.txt"))]
    assert core(ack(FA)) == [up.UploadProgress(10, 15), put(FB)]


def test_a_failed_ack_skips_the_owed_answer_to_the_pipelined_put() -> None:
    core = Core()
    core(upload(FA, FB))
    core(ready(FA))
    core(up.StreamEnded(10, 1))
    mismatch = Error(code=FrameCode.HASH_MISMATCH, message="hash", name="a.txt", ref="end")
    assert core(frame(mismatch)) == [
        up.OperationFailed(up.FailureKind.REMOTE, "HASH_MISMATCH", "hash", "a.txt")
    ]
    assert core.core.put_owed
    assert core(ready(FB)) == [up.Ignored("skipping the answer to a put of an operation that is over")]
    assert not core.core.put_owed
    # the next operation starts clean: its own answers are taken
    assert core(upload(FA)) == [put(FA)]
    assert core(ready(FA)) == [up.StreamFile(0, 0, 10)]


def test_an_abandoned_upload_skips_the_owed_answer_too() -> None:
    core = Core()
    core(upload(FA, FB))
    core(ready(FA))
    core(up.StreamEnded(10, 1))
    assert core(up.Abandoned()) == []
    assert core(up.CommitRequested()) == [up.SendFrame(Commit())]
    too_large = Error(code=FrameCode.TOO_LARGE, message="big", name="b.txt", ref="put")
    assert core(frame(too_large)) == [up.Ignored("skipping the answer to a put of an operation that is over")]
    assert core(frame(Committed(files=["a.txt"]))) == [up.CommitDone(("a.txt",))]


def test_a_stream_stopped_by_a_reply_pipelines_nothing() -> None:
    core = Core()
    core(upload(FA, FB))
    core(ready(FA))
    core(up.ChunkSent(4))
    mismatch = Error(code=FrameCode.IO_ERROR, message="disk", name="a.txt", ref="end")
    assert core(frame(mismatch)) == [up.AbortStream()]
    assert core(up.StreamEnded(4, 1, aborted=True)) == [
        up.OperationFailed(up.FailureKind.REMOTE, "IO_ERROR", "disk", "a.txt")
    ]
    assert not core.core.put_owed


def test_an_empty_file_is_put_and_ended_without_chunks() -> None:
    empty = up.LocalFile("e", 0, sha(b""))
    core = Core()
    assert core(upload(empty)) == [put(empty)]
    assert core(ready(empty)) == [up.StreamFile(0, 0, 0)]
    assert core(up.StreamEnded(0, 0)) == [up.SendFrame(End(name="e"))]
    assert core(ack(empty)) == [
        up.UploadProgress(0, 0),
        up.UploadDone((up.UploadedFile("e", 0, sha(b""), up.UploadStatus.SENT, 0),)),
    ]


def test_an_empty_upload_is_done_at_once() -> None:
    assert Core()(upload()) == [up.UploadDone(())]


def test_a_prove_challenge_is_answered_with_the_proof_of_possession() -> None:
    core = Core()
    core(upload(FA))
    assert core(frame(Prove(name="a.txt", nonce=NONCE))) == [up.ComputeProof(0, NONCE)]
    assert core.core.next_deadline() is None  # hashing the file takes what it takes
    core.now = 5.0
    assert core(up.ProofComputed("f" * 64)) == [up.SendFrame(Proof(name="a.txt", sha256="f" * 64))]
    assert core.core.next_deadline() == 65.0  # a fresh deadline for the new wait
    [progress, done] = core(have(FA))
    assert progress == up.UploadProgress(10, 10)
    assert isinstance(done, up.UploadDone) and done.files[0].status is up.UploadStatus.DEDUPED


def test_a_second_challenge_after_the_proof_is_unexpected() -> None:
    core = Core()
    core(upload(FA))
    core(frame(Prove(name="a.txt", nonce=NONCE)))
    core(up.ProofComputed("f" * 64))
    assert core(frame(Prove(name="a.txt", nonce=NONCE))) == [
        up.OperationFailed(
            up.FailureKind.LOCAL, FrameCode.UNEXPECTED, "unexpected 'prove' frame from the worker"
        )
    ]


def test_a_partial_upload_resumes_after_its_prefix_is_verified() -> None:
    core = Core()
    core(upload(FA))
    prefix = sha(A[:4])
    assert core(ready(FA, 4, prefix)) == [up.HashPrefix(0, 4)]
    assert core(up.PrefixHashed(prefix)) == [up.StreamFile(0, 4, 10)]
    assert core(up.ChunkSent(10)) == [up.UploadProgress(10, 10)]
    assert core(up.StreamEnded(6, 1)) == [up.SendFrame(End(name="a.txt"))]
    [done] = core(ack(FA))
    assert done == up.UploadDone((up.UploadedFile("a.txt", 10, sha(A), up.UploadStatus.RESUMED, 6),))
    stats = core.core.stats
    assert (stats.files_resumed, stats.bytes_skipped, stats.chunk_bytes_sent) == (1, 4, 6)


def test_a_partial_with_other_bytes_restarts_the_file_once() -> None:
    core = Core()
    core(upload(FA))
    core(ready(FA, 4, sha(b"XXXX")))
    assert core(up.PrefixHashed(sha(A[:4]))) == [put(FA, restart=True)]
    # after the restart the offset is taken as it comes (the worker discarded the partial)
    assert core(ready(FA)) == [up.StreamFile(0, 0, 10)]
    assert core.core.stats.files_resumed == 0


def test_a_stale_chunk_error_is_skipped_while_announcing_but_fails_the_ack() -> None:
    stale = frame(Error(code=FrameCode.UNEXPECTED, message="no upload open", ref=CHUNK_REF))
    core = Core()
    core(upload(FA))
    assert core(stale) == [up.Ignored("ignoring a stale chunk error: no upload open")]
    assert core.core.next_deadline() == 60.0  # skipping does not extend the wait
    core(ready(FA))
    core(up.StreamEnded(10, 1))
    assert core(stale) == [
        up.OperationFailed(up.FailureKind.REMOTE, FrameCode.UNEXPECTED, "no upload open", None)
    ]


def test_a_worker_error_fails_the_upload_with_its_code() -> None:
    core = Core()
    core(upload(FA))
    refused = Error(code=FrameCode.TOO_LARGE, message="too big", name="a.txt", ref="put")
    assert core(frame(refused)) == [
        up.OperationFailed(up.FailureKind.REMOTE, FrameCode.TOO_LARGE, "too big", "a.txt")
    ]
    assert not core.core.busy


def test_a_reply_during_the_stream_stops_it_and_no_end_is_sent() -> None:
    core = Core()
    core(upload(FA))
    core(ready(FA))
    core(up.ChunkSent(4))
    refused = Error(code=FrameCode.IO_ERROR, message="disk full", name="a.txt", ref=CHUNK_REF)
    assert core(frame(refused)) == [up.AbortStream()]
    assert core(up.ChunkSent(8)) == [up.UploadProgress(8, 10)]  # the chunk in flight still counts
    assert core(up.StreamEnded(8, 2, aborted=True)) == [
        up.OperationFailed(up.FailureKind.REMOTE, FrameCode.IO_ERROR, "disk full", "a.txt")
    ]
    assert core.core.stats.chunk_bytes_sent == 8


def test_a_reply_queued_before_the_stream_stops_it_after_one_chunk() -> None:
    core = Core()
    core(upload(FA))
    core(frame(Prove(name="a.txt", nonce=NONCE)))
    late = Error(code=FrameCode.UNEXPECTED, message="late", ref=CHUNK_REF)
    assert core(frame(late)) == []  # queued: no wait is open while the proof is computed
    core(up.ProofComputed("f" * 64))  # the wait for ready skips the stale error
    assert core(ready(FA)) == [up.StreamFile(0, 0, 10)]
    core = Core()
    core(upload(FA))
    core(ready(FA, 4, "1" * 64))
    assert core(frame(late)) == []
    assert core(up.PrefixHashed("1" * 64)) == [up.StreamFile(0, 4, 10), up.AbortStream()]


def test_no_reply_in_time_fails_with_timeout() -> None:
    core = Core(reply_timeout=30.0)
    core.now = 100.0
    core(upload(FA))
    assert core.core.next_deadline() == 130.0
    core.now = 129.9
    assert core(up.TimerFired()) == []  # early: nothing happens, the deadline stays
    assert core.core.next_deadline() == 130.0
    core.now = 130.0
    assert core(up.TimerFired()) == [
        up.OperationFailed(up.FailureKind.LOCAL, FrameCode.TIMEOUT, "no reply within 30 s")
    ]
    assert core(up.TimerFired()) == []


def test_a_closed_channel_fails_the_wait_and_every_later_one() -> None:
    closed = up.OperationFailed(
        up.FailureKind.CHANNEL_CLOSED,
        FrameCode.CHANNEL_CLOSED,
        "data channel closed while waiting for the worker",
    )
    core = Core()
    core(upload(FA))
    assert core(up.ChannelClosed()) == [closed]
    assert core(upload(FA)) == [put(FA), closed]
    assert core(up.CommitRequested()) == [up.SendFrame(Commit()), closed]
    assert core(ready(FA)) == []  # nothing follows the close


def test_replies_queued_before_the_close_are_taken_first() -> None:
    core = Core()
    core(upload(FA))
    core(frame(Prove(name="a.txt", nonce=NONCE)))
    core(have(FA))
    core(up.ChannelClosed())
    assert core(up.ProofComputed("f" * 64)) == [
        up.SendFrame(Proof(name="a.txt", sha256="f" * 64)),
        up.UploadProgress(10, 10),
        up.UploadDone((up.UploadedFile("a.txt", 10, sha(A), up.UploadStatus.DEDUPED, 0),)),
    ]


def test_a_close_during_the_stream_stops_it_and_fails_at_its_end() -> None:
    core = Core()
    core(upload(FA))
    core(ready(FA))
    assert core(up.ChannelClosed()) == [up.AbortStream()]
    assert core(up.StreamEnded(4, 1, aborted=True)) == [
        up.OperationFailed(
            up.FailureKind.CHANNEL_CLOSED,
            FrameCode.CHANNEL_CLOSED,
            "data channel closed while waiting for the worker",
        )
    ]


def test_a_failed_send_ends_the_operation() -> None:
    core = Core()
    core(upload(FA))
    assert core(up.SendFailed("data channel is closed")) == [
        up.OperationFailed(up.FailureKind.CHANNEL_CLOSED, FrameCode.CHANNEL_CLOSED, "data channel is closed")
    ]
    assert core(up.SendFailed("data channel is closed")) == []  # idle: nothing to end


def test_a_failure_during_a_task_waits_for_its_answer() -> None:
    core = Core()
    core(upload(FA))
    core(frame(Prove(name="a.txt", nonce=NONCE)))
    assert core(up.SendFailed("data channel is closing")) == []
    assert core.core.busy  # the proof is still being computed
    assert core(up.ProofComputed("f" * 64)) == [
        up.OperationFailed(up.FailureKind.CHANNEL_CLOSED, FrameCode.CHANNEL_CLOSED, "data channel is closing")
    ]


def test_a_failed_task_ends_the_upload() -> None:
    core = Core()
    core(upload(FA))
    core(ready(FA))
    assert core(up.TaskFailed(FrameCode.TIMEOUT, "send buffer did not drain within 60 s")) == [
        up.OperationFailed(up.FailureKind.LOCAL, FrameCode.TIMEOUT, "send buffer did not drain within 60 s")
    ]
    core(upload(FA))
    core(ready(FA))
    assert core(up.TaskFailed(FrameCode.CHANNEL_CLOSED, "data channel is closing", channel_closed=True)) == [
        up.OperationFailed(up.FailureKind.CHANNEL_CLOSED, FrameCode.CHANNEL_CLOSED, "data channel is closing")
    ]


def test_an_acknowledgement_of_other_content_fails() -> None:
    core = Core()
    core(upload(FA))
    core(ready(FA))
    core(up.StreamEnded(10, 1))
    assert core(frame(Ack(name="a.txt", size=10, sha256=sha(b"other")))) == [
        up.OperationFailed(
            up.FailureKind.LOCAL, FrameCode.UNEXPECTED, "acknowledgement for 'a.txt' does not match 'a.txt'"
        )
    ]


def test_bad_and_unexpected_frames_fail_the_wait() -> None:
    core = Core()
    core(upload(FA))
    assert core(up.BadFrameIn(FrameError("type: unknown frame type 'warp'"))) == [
        up.OperationFailed(
            up.FailureKind.LOCAL,
            FrameCode.BAD_FRAME,
            "bad frame from the worker: type: unknown frame type 'warp'",
        )
    ]
    core(upload(FA))
    assert core(frame(Committed(files=[]))) == [
        up.OperationFailed(
            up.FailureKind.LOCAL, FrameCode.UNEXPECTED, "unexpected 'committed' frame from the worker"
        )
    ]


def test_commit_returns_the_committed_names() -> None:
    core = Core()
    assert core(up.CommitRequested()) == [up.SendFrame(Commit())]
    assert core(frame(Committed(files=["a.txt", "b.txt"]))) == [up.CommitDone(("a.txt", "b.txt"))]
    core(up.CommitRequested())
    assert core(frame(Error(code=FrameCode.COMMITTED, message="already committed", ref="commit"))) == [
        up.OperationFailed(up.FailureKind.REMOTE, FrameCode.COMMITTED, "already committed")
    ]


def test_one_operation_at_a_time() -> None:
    core = Core()
    core(upload(FA))
    assert core(upload(FB)) == [up.Ignored("upload refused: an operation is in progress")]
    assert core(up.CommitRequested()) == [up.Ignored("commit refused: an operation is in progress")]
    assert core.core.files == (FA,)


def test_an_abandoned_upload_leaves_the_core_idle_and_late_replies_queued() -> None:
    core = Core()
    core(upload(FA))
    core(ready(FA))
    assert core(up.Abandoned()) == []
    assert not core.core.busy and core.core.phase is Phase.IDLE
    assert core(up.StreamEnded(4, 1)) == []  # the cancelled task's answer, if any, changes nothing
    assert core(ack(FA)) == []  # a late reply is queued for the next wait, as any reply
    assert core(up.CommitRequested()) == [
        up.SendFrame(Commit()),
        up.OperationFailed(
            up.FailureKind.LOCAL, FrameCode.UNEXPECTED, "unexpected 'ack' frame from the worker"
        ),
    ]


def test_answers_nobody_waits_for_change_nothing() -> None:
    core = Core()
    core(upload(FA))
    before = dict(vars(core.core))
    for stray in (
        up.ProofComputed("f" * 64),
        up.PrefixHashed("f" * 64),
        up.ChunkSent(3),
        up.StreamEnded(3, 1),
        up.TaskFailed(FrameCode.IO_ERROR, "x"),
    ):
        assert core(stray) == []
    assert dict(vars(core.core)) == before


@pytest.mark.parametrize(
    ("names", "error"),
    [(["a", "a"], ValueError), (["../x"], FrameError), (["ok", ""], FrameError)],
)
def test_upload_names_are_checked_before_anything_is_sent(names: list[str], error: type[Exception]) -> None:
    with pytest.raises(error):
        check_upload_names(names)
    assert check_upload_names(["a", "b.txt"]) == ["a", "b.txt"]


# --- totality: every phase and every kind of event------------------------------------------------------
def reach(phase: Phase) -> Core:
    """A core in ``phase``, by the shortest honest path."""
    core = Core()
    if phase is Phase.COMMITTING:
        core(up.CommitRequested())
    elif phase is not Phase.IDLE:
        core(upload(FA))
        if phase is Phase.PROVING or phase is Phase.PROVED:
            core(frame(Prove(name="a.txt", nonce=NONCE)))
            if phase is Phase.PROVED:
                core(up.ProofComputed("f" * 64))
        elif phase is Phase.CHECKING:
            core(ready(FA, 4, sha(A[:4])))
        elif phase is not Phase.ANNOUNCED:
            core(ready(FA))
            if phase is Phase.ACKING:
                core(up.StreamEnded(10, 1))
    assert core.core.phase is phase
    return core


EVERY_EVENT: list[up.UploaderEvent] = [
    upload(FA),
    upload(),
    up.CommitRequested(),
    ready(FA),
    ready(FA, 4, sha(A[:4])),
    ready(FA, 99, sha(b"?")),
    have(FA),
    frame(Prove(name="a.txt", nonce=NONCE)),
    ack(FA),
    frame(Ack(name="b.txt", size=1, sha256=sha(b"b"))),
    frame(Committed(files=["a.txt"])),
    frame(Error(code=FrameCode.TOO_LARGE, message="no", ref="put")),
    frame(Error(code=FrameCode.UNEXPECTED, message="stale", ref=CHUNK_REF)),
    frame(End(name="a.txt")),
    up.BadFrameIn(FrameError("bad")),
    up.ChannelClosed(),
    up.SendFailed("data channel is closed"),
    up.TimerFired(),
    up.ProofComputed("f" * 64),
    up.PrefixHashed(sha(A[:4])),
    up.PrefixHashed(sha(b"other")),
    up.ChunkSent(4),
    up.StreamEnded(10, 1),
    up.StreamEnded(4, 1, aborted=True),
    up.TaskFailed(FrameCode.IO_ERROR, "disk"),
    up.TaskFailed(FrameCode.CHANNEL_CLOSED, "closed", channel_closed=True),
    up.Abandoned(),
]


def reach_pipelined(owed: bool) -> Core:
    """Acking file a with the put of b out behind its end; or (``owed``) idle after abandoning that."""
    core = Core()
    core(upload(FA, FB))
    core(ready(FA))
    core(up.StreamEnded(10, 1))
    assert core.core.next_announced
    if owed:
        core(up.Abandoned())
        assert core.core.put_owed
    return core


STARTS: list[tuple[str, Callable[[], Core]]] = [
    (phase.value, functools.partial(reach, phase)) for phase in Phase
]
STARTS += [("acking, next put out", functools.partial(reach_pipelined, False))]
STARTS += [("idle, a put answer owed", functools.partial(reach_pipelined, True))]


@pytest.mark.parametrize("start", [start for _, start in STARTS], ids=[name for name, _ in STARTS])
@pytest.mark.parametrize("late", [0.0, 61.0])
def test_every_event_in_every_phase_is_handled(start: Callable[[], Core], late: float) -> None:
    """Nothing raises, the invariants hold, and an operation never ends twice."""
    for event in EVERY_EVENT:
        core = start()
        core.now = late
        was_busy = core.core.busy
        out = core(event)
        ends = [i for i in out if isinstance(i, (up.UploadDone, up.CommitDone, up.OperationFailed))]
        assert len(ends) <= 1 and (not ends or out[-1] is ends[0])
        assert not ends or was_busy or isinstance(event, (up.UploadRequested, up.CommitRequested))
        assert not core.core.busy or not ends
