"""Unit tests of the sans-IO pieces: frame parsing, name checks, tuning, content store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fsm_worker.protocol.transfer.frames import (
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
    Partial,
    Put,
    Ready,
    Results,
    ResultsDone,
    Same,
    encode_frame,
    parse_frame,
)
from fsm_worker.shells.transfer import ContentStore, FrameCode, FrameError, TransferTuning, check_name

SHA = "ab" * 32


@pytest.mark.parametrize(
    "frame",
    [
        Put("a.csv", 10, SHA),
        Put("a.csv", 10, SHA, restart=True),
        End("a.csv"),
        Commit(),
        FetchResults(),
        FetchResults([Held("a/b", 3, SHA)]),
        FetchResults(resume=Partial("m", 1, SHA)),
        FileHeader("m", 2, SHA, offset=1),
        Same("a/b", 3, SHA),
        Manifest([Held("a/b", 3, SHA), Held("c", 0, SHA)]),
        Ready("a", 0),
        Ready("a", 5, SHA),
        Have("a", 1, SHA),
        Ack("a", 1, SHA),
        Committed(["a", "b"]),
        FileHeader("m", 2, SHA),
        Results(2, 10),
        ResultsDone(2),
        Error("BAD_NAME", "nope", "x", "put"),
    ],
)
def test_roundtrip(frame: object) -> None:
    assert parse_frame(encode_frame(frame)) == frame  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "not JSON"),
        ('"put"', "JSON object"),
        ('{"type": 3}', "unknown frame type"),
        ('{"type": "put", "name": "a", "size": 1.0, "sha256": "' + SHA + '"}', "size"),
        ('{"type": "put", "name": "a", "size": true, "sha256": "' + SHA + '"}', "size"),
        ('{"type": "put", "name": 7, "size": 1, "sha256": "' + SHA + '"}', "name"),
        ('{"type": "put", "name": "a", "size": 1, "sha256": "' + SHA.upper() + '"}', "sha256"),
        ('{"type": "put", "name": "a", "size": 1}', "sha256"),
        ('{"type": "end", "name": "a", "extra": 1}', "extra"),
        ('{"type": "fetch_results", "have": "a"}', "have"),
        ('{"type": "fetch_results", "have": [{"name": "a", "size": 1}]}', "sha256"),
        ('{"type": "put", "name": "' + "x" * 70000 + '"}', "longer"),
    ],
)
def test_strict_parsing(text: str, fragment: str) -> None:
    with pytest.raises(FrameError, match=fragment) as err:
        parse_frame(text)
    assert err.value.code == FrameCode.BAD_FRAME


@pytest.mark.parametrize("name", ["data.csv", ".hidden", "a b", "ünï.txt", "x" * 255, "..."])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "/abs", "a/b", "a\\b", "a\x00", "a\n", "x" * 256, "é" * 128])
def test_bad_names(name: str) -> None:
    with pytest.raises(FrameError) as err:
        check_name(name)
    assert err.value.code == FrameCode.BAD_NAME


@given(st.text(max_size=40))
def test_accepted_names_stay_in_the_directory(name: str) -> None:
    base = Path("/jobs/j1/inputs")
    try:
        check_name(name)
    except FrameError:
        return
    assert (base / name).parent == base
    assert (base / name).resolve().parent == base.resolve()


def test_tuning_validation() -> None:
    with pytest.raises(ValueError, match="low_water"):
        TransferTuning(high_water=100, low_water=100)
    with pytest.raises(ValueError, match="chunk_size"):
        TransferTuning(chunk_size=0)


def test_store_roundtrip_and_eviction(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    src = tmp_path / "f"
    src.write_bytes(b"hello")
    digest = hashlib.sha256(b"hello").hexdigest()
    assert store.lookup(digest, 5) is None
    store.add(src, digest)
    assert digest in store
    dest = tmp_path / "job" / "f"
    dest.parent.mkdir()
    assert store.materialize(digest, 5, dest)
    assert dest.read_bytes() == b"hello"
    assert store.lookup(digest, 6) is None  # wrong size → evicted
    assert digest not in store
    assert not store.materialize(digest, 5, tmp_path / "job" / "g")
    with pytest.raises(ValueError, match="sha256"):
        store.path_for("../etc")


def test_store_copy_mode_and_verify(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store", link=False, verify=True)
    src = tmp_path / "f"
    src.write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    entry = store.add(src, digest)
    assert entry.stat().st_ino != src.stat().st_ino
    entry.chmod(0o644)
    entry.write_bytes(b"xyz")  # same size, wrong content
    assert store.lookup(digest, 3) is None


def test_error_frame_is_plain_json() -> None:
    data = json.loads(encode_frame(Error("X", "y")))
    assert data == {"type": "error", "code": "X", "message": "y", "name": None, "ref": None}
