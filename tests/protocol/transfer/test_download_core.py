"""The client's download core without sockets or disk: exact instruction lists."""

from __future__ import annotations

from support.transfer_sim import sha

from fsm_worker.protocol.transfer import download as dl
from fsm_worker.protocol.transfer.errors import FrameCode
from fsm_worker.protocol.transfer.frames import (
    CHUNK_REF,
    End,
    Error,
    FileHeader,
    Held,
    Manifest,
    Results,
    ResultsDone,
    Same,
)
from fsm_worker.protocol.transfer.upload_steps import ChunkIn, Failed, FrameIn, WriteChunk
from fsm_worker.protocol.transfer.uploader_steps import TimerFired


def header(name: str, data: bytes) -> FrameIn:
    return FrameIn(FileHeader(name=name, size=len(data), sha256=sha(data)))


def announce(*files: tuple[str, bytes]) -> tuple[FrameIn, FrameIn]:
    """``results`` and the manifest of ``files``."""
    entries = [Held(name=n, size=len(d), sha256=sha(d)) for n, d in files]
    return FrameIn(Results(count=len(files), total_size=sum(len(d) for _, d in files))), FrameIn(
        Manifest(files=entries)
    )


def feed(core: dl.DownloadReceiver, *events: dl.DownloadEvent) -> None:
    for event in events:
        core.handle(event, 0.0)


def test_a_nested_download_step_by_step() -> None:
    core = dl.DownloadReceiver()
    results, manifest = announce(("a/x.txt", b"A"), ("b/x.txt", b"BB"))
    assert core.handle(results, 0.0) == []
    assert core.handle(manifest, 0.0) == []
    assert core.handle(header("a/x.txt", b"A"), 0.0) == [dl.OpenFile("a/x.txt", 1)]
    assert core.handle(ChunkIn(b"A"), 0.0) == [WriteChunk(b"A"), dl.DownloadProgress(1, 3)]
    assert core.handle(FrameIn(End(name="a/x.txt")), 0.0) == [dl.FinishFile()]
    assert core.handle(dl.FileFinished(sha(b"A")), 0.0) == [dl.PlaceFile("a/x.txt")]
    assert core.handle(dl.FilePlaced(), 0.0) == []
    core.handle(header("b/x.txt", b"BB"), 0.0)
    assert core.handle(ChunkIn(b"BB"), 0.0) == [WriteChunk(b"BB"), dl.DownloadProgress(3, 3)]
    core.handle(FrameIn(End(name="b/x.txt")), 0.0)
    core.handle(dl.FileFinished(sha(b"BB")), 0.0)
    core.handle(dl.FilePlaced(), 0.0)
    assert core.handle(FrameIn(ResultsDone(count=2)), 0.0) == [dl.DownloadDone(("a/x.txt", "b/x.txt"))]
    core.validate_state()
    assert core.handle(FrameIn(ResultsDone(count=2)), 0.0) == []  # nothing after the end


def test_a_held_result_counts_as_done_without_bytes() -> None:
    core = dl.DownloadReceiver(held={"a/x.txt": (1, sha(b"A"))})
    feed(core, *announce(("a/x.txt", b"A"), ("b", b"BB")))
    assert core.handle(FrameIn(Same(name="a/x.txt", size=1, sha256=sha(b"A"))), 0.0) == [
        dl.DownloadProgress(1, 3)
    ]
    core.handle(header("b", b"BB"), 0.0)
    core.handle(ChunkIn(b"BB"), 0.0)
    core.handle(FrameIn(End(name="b")), 0.0)
    core.handle(dl.FileFinished(sha(b"BB")), 0.0)
    core.handle(dl.FilePlaced(), 0.0)
    assert core.handle(FrameIn(ResultsDone(count=2)), 0.0) == [dl.DownloadDone(("a/x.txt", "b"))]
    assert core.kept == ["a/x.txt"]
    core.validate_state()


def test_a_same_frame_for_a_file_the_client_does_not_hold_fails() -> None:
    for held in ({}, {"a": (1, sha(b"B"))}, {"a": (2, sha(b"A"))}):
        core = dl.DownloadReceiver(held=held)
        feed(core, *announce(("a", b"A")))
        [out] = core.handle(FrameIn(Same(name="a", size=1, sha256=sha(b"A"))), 0.0)
        assert isinstance(out, dl.DownloadFailed)
        assert (out.code, out.name) == (FrameCode.UNEXPECTED, "a")
        assert "holds no such file" in out.message
        assert core.kept == []


def test_a_resumed_file_opens_at_the_offset_it_asked_for() -> None:
    core = dl.DownloadReceiver(resume=("f", 2))
    feed(core, *announce(("f", b"abcd")))
    resumed = FrameIn(FileHeader(name="f", size=4, sha256=sha(b"abcd"), offset=2))
    assert core.handle(resumed, 0.0) == [dl.OpenFile("f", 4, 2)]
    assert core.handle(ChunkIn(b"cd"), 0.0) == [WriteChunk(b"cd"), dl.DownloadProgress(4, 4)]
    core.validate_state()
    for asked in (None, ("f", 1), ("g", 2)):
        other = dl.DownloadReceiver(resume=asked)
        out = failure(other, *announce(("f", b"abcd")), resumed)
        assert (out.code, out.message) == (FrameCode.UNEXPECTED, "'f': offset 2 was not asked for")


def failure(core: dl.DownloadReceiver, *events: dl.DownloadEvent) -> dl.DownloadFailed:
    out: list[dl.DownloadInstruction] = []
    for event in events:
        out = core.handle(event, 0.0)
        core.validate_state()
    [last] = out
    assert isinstance(last, dl.DownloadFailed)
    assert core.finished
    return last


def test_unsafe_and_colliding_names_are_refused() -> None:
    for name in ["../x", "/etc/passwd", "a//b", "a/./b", "nul\x00", "a\\b", ""]:
        assert failure(dl.DownloadReceiver(), *announce((name, b"x"))).code == FrameCode.BAD_NAME
    clash = failure(dl.DownloadReceiver(), *announce(("a", b"x"), ("a/b", b"x")))
    assert clash == dl.DownloadFailed(
        FrameCode.BAD_NAME, "result 'a/b' collides with 'a'; nothing is merged or overwritten", "a/b"
    )


def test_caps_hold_even_when_the_worker_lies() -> None:
    limits = dl.DownloadLimits(max_files=1, max_bytes=10)
    assert failure(dl.DownloadReceiver(limits), FrameIn(Results(count=2, total_size=1))) == dl.DownloadFailed(
        FrameCode.TOO_MANY_FILES, "the worker announces 2 result files (max_download_files = 1)"
    )
    core = dl.DownloadReceiver(limits)
    core.handle(FrameIn(Results(count=1, total_size=1)), 0.0)
    big = Held(name="big", size=11, sha256=sha(b"x" * 11))
    assert failure(core, FrameIn(Manifest(files=[big]))).code == FrameCode.TOO_LARGE
    core = dl.DownloadReceiver(limits)
    core.handle(FrameIn(Results(count=1, total_size=1)), 0.0)
    two = [Held(name=n, size=1, sha256=sha(b"x")) for n in ("a", "b")]
    assert failure(core, FrameIn(Manifest(files=two))).code == FrameCode.TOO_MANY_FILES


def test_every_result_must_match_its_manifest_entry() -> None:
    results, manifest = announce(("a", b"A"), ("b", b"B"))
    for wrong in (header("b", b"B"), header("a", b"Z"), header("a", b"AA")):
        out = failure(dl.DownloadReceiver(), results, manifest, wrong)
        assert out.code == FrameCode.UNEXPECTED
        assert "does not match the manifest entry 'a'" in out.message
    early = failure(dl.DownloadReceiver(), results, header("a", b"A"))  # bytes before the manifest
    assert early.code == FrameCode.UNEXPECTED
    extra = Manifest(files=[Held(name="c", size=1, sha256=sha(b"C"))])
    out = failure(dl.DownloadReceiver(), results, manifest, FrameIn(extra))  # the whole manifest arrived
    assert out.code == FrameCode.UNEXPECTED
    split = dl.DownloadReceiver()  # a manifest may come in several frames
    feed(split, results, FrameIn(Manifest(files=[Held(name="a", size=1, sha256=sha(b"A"))])))
    assert split.handle(header("a", b"A"), 0.0) == [
        dl.DownloadFailed(FrameCode.UNEXPECTED, "unexpected 'file' frame during download")
    ]


def test_wrong_bytes_and_frames_fail_the_download() -> None:
    start = (*announce(("f", b"ab")), header("f", b"ab"))
    assert failure(dl.DownloadReceiver(), *start, ChunkIn(b"abc")).code == FrameCode.SIZE_MISMATCH
    assert (
        failure(dl.DownloadReceiver(), *start, ChunkIn(b"a"), FrameIn(End(name="f"))).code
        == FrameCode.SIZE_MISMATCH
    )
    hashed = failure(
        dl.DownloadReceiver(), *start, ChunkIn(b"ab"), FrameIn(End(name="f")), dl.FileFinished(sha(b"zz"))
    )
    assert hashed.code == FrameCode.HASH_MISMATCH
    assert failure(dl.DownloadReceiver(), ChunkIn(b"x")).code == FrameCode.UNEXPECTED
    assert failure(dl.DownloadReceiver(), *start, FrameIn(ResultsDone(count=1))).code == FrameCode.UNEXPECTED
    truncated = failure(dl.DownloadReceiver(), *announce(("f", b"")), FrameIn(ResultsDone(count=1)))
    assert truncated.code == FrameCode.UNEXPECTED
    remote = failure(dl.DownloadReceiver(), FrameIn(Error(code="NOT_READY", message="results are not ready")))
    assert remote == dl.DownloadFailed("NOT_READY", "results are not ready", None, remote=True)
    io = failure(dl.DownloadReceiver(), *start, Failed(FrameCode.EXISTS, "exists"))
    assert (io.code, io.name, io.remote) == (FrameCode.EXISTS, "f", False)
    core = dl.DownloadReceiver()
    assert core.handle(FrameIn(Error(code="UNEXPECTED", message="stale", ref=CHUNK_REF)), 0.0) == []
    assert not core.finished


# --- the idle deadline (the worker's silence), as data: `next_deadline()` + `TimerFired` ---------------------


def test_the_idle_deadline_starts_when_fetch_results_is_sent_and_every_frame_or_chunk_moves_it() -> None:
    core = dl.DownloadReceiver(idle_timeout=5.0)
    assert core.next_deadline() is None  # nothing asked yet
    assert core.handle(dl.FetchSent(), 10.0) == []
    assert core.next_deadline() == 15.0
    results, manifest = announce(("f", b"abcd"))
    core.handle(results, 12.0)
    core.handle(manifest, 13.0)
    assert core.next_deadline() == 18.0
    core.handle(header("f", b"abcd"), 14.0)
    assert core.handle(ChunkIn(b"ab"), 16.0) == [WriteChunk(b"ab"), dl.DownloadProgress(2, 4)]
    assert core.next_deadline() == 21.0
    assert core.handle(TimerFired(), 20.9) == []  # early: nothing happens
    core.validate_state()


def test_a_worker_silent_for_the_idle_timeout_fails_the_download_with_timeout_once() -> None:
    core = dl.DownloadReceiver(idle_timeout=2.5)
    core.handle(dl.FetchSent(), 0.0)
    core.handle(announce(("f", b"x"))[0], 1.0)
    assert core.handle(TimerFired(), 3.5) == [
        dl.DownloadFailed(FrameCode.TIMEOUT, "download stalled for 2.5 s", None, False)
    ]
    assert core.next_deadline() is None and core.finished
    assert core.handle(TimerFired(), 9.0) == []


def test_a_finished_or_failed_download_has_no_deadline() -> None:
    core = dl.DownloadReceiver(idle_timeout=1.0)
    core.handle(dl.FetchSent(), 0.0)
    feed(core, *announce(("f", b"x")), header("f", b"x"), ChunkIn(b"x"), FrameIn(End(name="f")))
    feed(core, dl.FileFinished(sha(b"x")), dl.FilePlaced())
    assert core.handle(FrameIn(ResultsDone(count=1)), 0.5) == [dl.DownloadDone(("f",))]
    assert core.next_deadline() is None
    failed = dl.DownloadReceiver(idle_timeout=1.0)
    failed.handle(dl.FetchSent(), 0.0)
    failed.handle(FrameIn(Error(code="NOT_READY", message="no results yet")), 0.1)
    assert failed.next_deadline() is None


def test_without_an_idle_timeout_there_is_never_a_deadline() -> None:
    core = dl.DownloadReceiver()
    core.handle(dl.FetchSent(), 0.0)
    assert core.next_deadline() is None
    assert core.handle(TimerFired(), 1e9) == []
