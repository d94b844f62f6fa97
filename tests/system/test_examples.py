"""The README's embedding example really works: a custom job type through the whole protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rooms import Room

from fsm_worker.client import AllRejectedError
from fsm_worker.examples.word_count import registry
from fsm_worker.worker import WorkerConfig, WorkerHost


async def test_custom_job_type_runs_end_to_end(room: Room, tmp_path: Path) -> None:
    host = WorkerHost(
        WorkerConfig(room.url, room.token, "words", workdir=tmp_path / "w", loopback_only=True), registry()
    )
    await host.start()
    room.closers.append(host.shutdown)
    (tmp_path / "a.txt").write_text("the cat and the hat\n")
    (tmp_path / "b.txt").write_text("The end of the story.\n")
    client = await room.client()
    job = await client.submit("word-count", {"top": 2}, [tmp_path / "a.txt", tmp_path / "b.txt"])
    outcome = await job.result(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "top_words.json").read_text()) == [["the", 4], ["cat", 1]]
    assert [path.name for path in outcome.files] == ["top_words.json"]

    with pytest.raises(AllRejectedError) as rejected:  # a bad config is refused up front, naming the field
        await client.submit("word-count", {"top": "all"})
    ((reason, details),) = rejected.value.reasons.values()
    assert reason == "incompatible" and "top" in details[0]
