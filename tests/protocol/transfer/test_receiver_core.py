"""The worker's transfer core without sockets or disk: exact instruction lists."""

from __future__ import annotations

from support.transfer_sim import Disk, feed, restored, sha

from fsm_worker.protocol.transfer import receiver as rx
from fsm_worker.protocol.transfer import sender as tx
from fsm_worker.protocol.transfer.errors import FrameCode, FrameError
from fsm_worker.protocol.transfer.frames import (
    MAX_CONTROL_FRAME,
    Ack,
    Commit,
    Committed,
    End,
    Error,
    FetchResults,
    FileHeader,
    Have,
    Held,
    Manifest,
    Proof,
    Prove,
    Put,
    Ready,
    Results,
    ResultsDone,
    Same,
    encode_frame,
)
from fsm_worker.protocol.transfer.worker import WorkerTransferCore

DATA = b"abcd"
H = sha(DATA)
NONCE = "ab" * 16


def core(max_bytes: int = 1000, max_files: int = 10, committed: bool = False) -> WorkerTransferCore:
    return WorkerTransferCore(rx.UploadLimits(max_bytes, max_files), committed=committed)


def put(name: str = "f", data: bytes = DATA, restart: bool = False) -> rx.FrameIn:
    return rx.FrameIn(Put(name=name, size=len(data), sha256=sha(data), restart=restart))


def test_upload_commit_step_by_step() -> None:
    c = core()
    assert c.handle(put()) == [rx.Probe("f", 4, H)]
    assert c.handle(rx.Probed(False, 0, NONCE)) == [rx.OpenUpload("f", 4, H, 0)]
    assert c.handle(rx.UploadOpened(None)) == [rx.Send(Ready(name="f", offset=0, prefix_sha256=None))]
    assert c.handle(rx.ChunkIn(b"ab")) == [rx.WriteChunk(b"ab"), rx.Progress("f", 2, 4)]
    assert c.handle(rx.ChunkIn(b"cd")) == [rx.WriteChunk(b"cd"), rx.Progress("f", 4, 4)]
    assert c.handle(rx.FrameIn(End(name="f"))) == [rx.FinishUpload()]
    assert c.handle(rx.UploadFinished(H)) == [rx.PlaceInput("f", H)]
    assert c.handle(rx.InputPlaced()) == [rx.AddToStore("f", H), rx.Send(Ack(name="f", size=4, sha256=H))]
    assert c.handle(rx.FrameIn(Commit())) == [rx.RunCommit(("f",))]
    assert c.handle(rx.CommitAccepted()) == [rx.RemovePartials(), rx.Send(Committed(files=["f"]))]
    c.validate_state()
    assert (c.stats.files_received, c.stats.chunk_bytes_received, c.stats.errors_sent) == (1, 4, 0)
    refused = c.handle(put())
    assert refused == [
        rx.Send(Error(code=FrameCode.COMMITTED, message="inputs are already committed", name="f", ref="put"))
    ]


def test_dedupe_needs_a_proof_of_possession() -> None:
    c = core()
    c.handle(put())
    assert c.handle(rx.Probed(True, 0, NONCE)) == [rx.Send(Prove(name="f", nonce=NONCE))]
    proof = sha(NONCE.encode() + DATA)
    assert c.handle(rx.FrameIn(Proof(name="f", sha256=proof))) == [rx.CheckProof(H, 4, NONCE, proof)]
    assert c.handle(rx.ProofChecked(True)) == [rx.Materialize("f", 4, H)]
    assert c.handle(rx.Materialized(True)) == [
        rx.DiscardPartial(H),
        rx.Send(Have(name="f", size=4, sha256=H)),
    ]
    assert c.receiver.inputs == {"f": 4}
    c.handle(put("g"))
    c.handle(rx.Probed(True, 0, NONCE))
    c.handle(rx.FrameIn(Proof(name="g", sha256=proof)))
    c.handle(rx.ProofChecked(True))
    assert c.handle(rx.Materialized(False)) == [rx.OpenUpload("g", 4, H, 0)]  # the entry vanished: upload


def test_without_a_proof_the_client_must_upload() -> None:
    c = core()
    c.handle(put())
    c.handle(rx.Probed(True, 2, NONCE))
    wrong = sha(b"only the hash is known")
    assert c.handle(rx.FrameIn(Proof(name="f", sha256=wrong))) == [rx.CheckProof(H, 4, NONCE, wrong)]
    assert c.handle(rx.ProofChecked(False)) == [rx.OpenUpload("f", 4, H, 2)]
    assert c.receiver.inputs == {}
    c2 = core()
    c2.handle(put())
    c2.handle(rx.Probed(True, 0, NONCE))
    [late] = c2.handle(rx.FrameIn(Proof(name="other", sha256=wrong)))
    assert (
        isinstance(late, rx.Send)
        and isinstance(late.frame, Error)
        and late.frame.code == FrameCode.UNEXPECTED
    )
    [again] = c2.handle(rx.FrameIn(Proof(name="f", sha256=wrong)))  # the challenge ended with the last frame
    assert (
        isinstance(again, rx.Send)
        and isinstance(again.frame, Error)
        and again.frame.code == FrameCode.UNEXPECTED
    )


def test_resume_offsets() -> None:
    c = core()
    c.handle(put())
    assert c.handle(rx.Probed(False, 3, NONCE)) == [rx.OpenUpload("f", 4, H, 3)]
    assert c.handle(rx.UploadOpened(sha(b"abc"))) == [
        rx.Send(Ready(name="f", offset=3, prefix_sha256=sha(b"abc")))
    ]
    assert c.stats.files_resumed == 1
    assert c.handle(put(restart=True)) == [rx.CloseUpload(), rx.Probe("f", 4, H)]
    assert c.handle(rx.Probed(False, 3, NONCE)) == [rx.OpenUpload("f", 4, H, 0)]
    c2 = core()
    c2.handle(put())
    assert c2.handle(rx.Probed(False, 99, NONCE)) == [
        rx.OpenUpload("f", 4, H, 0)
    ]  # a partial longer than the file


def test_limits_name_their_setting_and_count_running_totals() -> None:
    c = core(max_bytes=10, max_files=2)
    c.handle(rx.Restored({"a": 4}, {sha(b"zz"): 2}))
    [too_large] = c.handle(put("b", b"12345"))
    assert isinstance(too_large, rx.Send) and isinstance(too_large.frame, Error)
    assert too_large.frame.code == FrameCode.TOO_LARGE
    assert "(6 of 10 bytes used; max_upload_bytes)" in too_large.frame.message
    # replacing "a" counts only the new size: 8 + the other partial's 2 fits in 10
    assert c.handle(put("a", b"12345678")) == [rx.Probe("a", 8, sha(b"12345678"))]
    c2 = core(max_bytes=100, max_files=2)
    c2.handle(rx.Restored({"a": 1, "b": 1}, {}))
    [too_many] = c2.handle(put("c"))
    assert isinstance(too_many, rx.Send) and isinstance(too_many.frame, Error)
    assert too_many.frame.code == FrameCode.TOO_MANY_FILES
    assert "max_input_files = 2" in too_many.frame.message
    assert c2.handle(put("a")) == [rx.Probe("a", 4, H)]


def test_stray_chunks_get_one_error_per_run() -> None:
    c = core()
    first = c.handle(rx.ChunkIn(b"x"))
    assert first == [
        rx.Send(
            Error(
                code=FrameCode.UNEXPECTED, message="binary chunk without an upload in progress", ref="chunk"
            )
        )
    ]
    assert c.handle(rx.ChunkIn(b"x")) == []
    c.handle(rx.BadFrameIn(FrameError("control frame is not JSON")))
    assert len(c.handle(rx.ChunkIn(b"x"))) == 1
    assert c.stats.chunks_dropped == 3


def test_oversize_chunk_bad_hash_short_end_and_write_failure() -> None:
    disk = Disk()
    c = core()
    feed(c, disk, rx.Restored({}, {}))
    assert [f.TYPE for f in feed(c, disk, put())] == ["ready"]
    [oversize] = feed(c, disk, rx.ChunkIn(b"12345"))
    assert isinstance(oversize, Error) and (oversize.code, oversize.ref) == (FrameCode.SIZE_MISMATCH, "chunk")
    feed(c, disk, rx.ChunkIn(b"abc"))
    [short] = feed(c, disk, rx.FrameIn(End(name="f")))
    assert isinstance(short, Error) and short.code == FrameCode.SIZE_MISMATCH
    assert bytes(disk.partials[H]) == b"abc"  # kept: resumable
    feed(c, disk, put())
    feed(c, disk, rx.ChunkIn(b"d"))
    assert feed(c, disk, rx.FrameIn(End(name="f"))) == [Ack(name="f", size=4, sha256=H)]
    c.handle(put("g", b"wxyz"))
    assert c.handle(rx.Probed(False, 0, NONCE)) == [rx.OpenUpload("g", 4, sha(b"wxyz"), 0)]
    c.handle(rx.UploadOpened(None))
    c.handle(rx.ChunkIn(b"wxyq"))
    c.handle(rx.FrameIn(End(name="g")))
    [discard, error] = c.handle(rx.UploadFinished(sha(b"wxyq")))
    assert discard == rx.DiscardPartial(sha(b"wxyz"))
    assert (
        isinstance(error, rx.Send)
        and isinstance(error.frame, Error)
        and error.frame.code == FrameCode.HASH_MISMATCH
    )
    disk.fail_writes = True
    feed(c, disk, put("h", b"1"))
    [io_error] = feed(c, disk, rx.ChunkIn(b"1"))
    assert isinstance(io_error, Error) and (io_error.code, io_error.ref) == (FrameCode.IO_ERROR, "chunk")
    assert c.receiver.upload is None


def test_commit_refused_busy_and_unexpected_frames() -> None:
    disk = Disk(refuse_commit=True)
    c = core()
    [refused] = feed(c, disk, rx.FrameIn(Commit()))
    assert isinstance(refused, Error) and (refused.code, refused.ref) == (FrameCode.COMMIT_FAILED, "commit")
    assert not c.receiver.committed
    feed(c, disk, put())
    [busy] = feed(c, disk, rx.FrameIn(Commit()))
    assert isinstance(busy, Error) and busy.code == FrameCode.BUSY
    [unexpected] = feed(c, disk, rx.FrameIn(Ack(name="f", size=1, sha256=H)))
    assert isinstance(unexpected, Error) and (unexpected.code, unexpected.ref) == (
        FrameCode.UNEXPECTED,
        "ack",
    )


def test_results_are_hashed_listed_then_sent_one_file_at_a_time_in_name_order() -> None:
    c = core()
    assert c.handle(rx.FrameIn(FetchResults())) == [tx.ListResults()]
    entries = (
        tx.ResultEntry("b/x.txt", tx.EntryKind.FILE, 1),
        tx.ResultEntry("a/x.txt", tx.EntryKind.FILE, 2),
    )
    assert c.handle(tx.ResultsListed(entries)) == [
        rx.Send(Results(count=2, total_size=3)),
        tx.HashResult(0, "a/x.txt"),
    ]
    assert c.handle(rx.FrameIn(FetchResults()))[0] == rx.Send(
        Error(code=FrameCode.BUSY, message="results are already being sent", ref="fetch_results")
    )
    b_sha = sha(b"b")
    assert c.handle(tx.ResultHashed(0, H)) == [tx.HashResult(1, "b/x.txt")]
    assert c.handle(tx.ResultStreamed(0, 2, 1)) == []  # nothing is streamed before the manifest
    assert c.handle(tx.ResultHashed(1, b_sha)) == [
        rx.Send(Manifest(files=[Held("a/x.txt", 2, H), Held("b/x.txt", 1, b_sha)])),
        rx.Send(FileHeader(name="a/x.txt", size=2, sha256=H)),
        tx.StreamResult(0, "a/x.txt", 2),
    ]
    assert c.handle(tx.ResultStreamed(0, 2, 1)) == [
        rx.Send(End(name="a/x.txt")),
        rx.Send(FileHeader(name="b/x.txt", size=1, sha256=b_sha)),
        tx.StreamResult(1, "b/x.txt", 1),
    ]
    assert c.handle(tx.ResultStreamed(1, 1, 1)) == [
        rx.Send(End(name="b/x.txt")),
        rx.Send(ResultsDone(count=2)),
    ]
    assert not c.sender.busy
    assert (c.stats.files_sent, c.stats.chunk_bytes_sent) == (2, 3)


def test_a_large_manifest_is_split_into_frames_under_the_cap() -> None:
    c = core()
    c.handle(rx.FrameIn(FetchResults()))
    names = [f"{i:04d}/" + "n" * 200 for i in range(2000)]
    c.handle(tx.ResultsListed(tuple(tx.ResultEntry(n, tx.EntryKind.FILE, 1) for n in names)))
    for i in range(1999):
        c.handle(tx.ResultHashed(i, H))
    out = c.handle(tx.ResultHashed(1999, H))
    manifests = [i.frame for i in out if isinstance(i, rx.Send) and isinstance(i.frame, Manifest)]
    assert len(manifests) > 1
    assert [f.name for m in manifests for f in m.files] == names
    assert all(len(encode_frame(m)) < MAX_CONTROL_FRAME for m in manifests)


def test_results_the_client_holds_unchanged_are_not_sent() -> None:
    c = core()
    have = [Held("a", 4, H), Held("b", 4, H), Held("c", 4, H)]  # "b" differs on the worker: it is sent
    assert c.handle(rx.FrameIn(FetchResults(have))) == [tx.ListResults()]
    entries = tuple(tx.ResultEntry(n, tx.EntryKind.FILE, 4) for n in "abc")
    c.handle(tx.ResultsListed(entries))
    other = sha(b"wxyz")
    c.handle(tx.ResultHashed(0, H))
    c.handle(tx.ResultHashed(1, other))
    assert c.handle(tx.ResultHashed(2, H)) == [
        rx.Send(Manifest(files=[Held("a", 4, H), Held("b", 4, other), Held("c", 4, H)])),
        rx.Send(Same(name="a", size=4, sha256=H)),
        rx.Send(FileHeader(name="b", size=4, sha256=other)),
        tx.StreamResult(1, "b", 4),
    ]
    assert c.handle(tx.ResultStreamed(1, 4, 1)) == [
        rx.Send(End(name="b")),
        rx.Send(Same(name="c", size=4, sha256=H)),
        rx.Send(ResultsDone(count=3)),
    ]
    assert (c.stats.files_deduped, c.stats.bytes_skipped, c.stats.chunk_bytes_sent) == (2, 8, 4)
    assert c.sender.held == {}  # forgotten: the next fetch says again what the client holds


def test_unsafe_results_are_refused() -> None:
    for entry, code in [
        (tx.ResultEntry("../x", tx.EntryKind.FILE, 1), FrameCode.BAD_NAME),
        (tx.ResultEntry("/abs", tx.EntryKind.FILE, 1), FrameCode.BAD_NAME),
        (tx.ResultEntry("link", tx.EntryKind.LINK, 1), FrameCode.LINK_REFUSED),
        (tx.ResultEntry("dev", tx.EntryKind.OTHER, 0), FrameCode.LINK_REFUSED),
    ]:
        c = core()
        c.handle(rx.FrameIn(FetchResults()))
        [reply] = c.handle(tx.ResultsListed((tx.ResultEntry("ok", tx.EntryKind.FILE, 1), entry)))
        assert isinstance(reply, rx.Send) and isinstance(reply.frame, Error)
        assert (reply.frame.code, reply.frame.ref) == (code, "fetch_results")
        assert not c.sender.busy
    c = core()
    c.handle(rx.FrameIn(FetchResults()))
    [not_ready] = c.handle(tx.ResultsListed(None))
    assert isinstance(not_ready, rx.Send) and isinstance(not_ready.frame, Error)
    assert not_ready.frame.code == FrameCode.NOT_READY


def test_a_restored_endpoint_resumes_from_disk() -> None:
    disk = Disk()
    c = core()
    feed(c, disk, rx.Restored({}, {}))
    feed(c, disk, put())
    feed(c, disk, rx.ChunkIn(b"ab"))
    c2 = core()  # the channel dropped; a new endpoint for the same job
    feed(c2, disk, restored(disk))
    assert c2.receiver.partial_bytes == 2
    [ready] = feed(c2, disk, put())
    assert ready == Ready(name="f", offset=2, prefix_sha256=sha(b"ab"))
