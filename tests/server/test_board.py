"""The dashboard's board of one room: pure, fed snapshots of the room's peers."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import attrs
from rooms import Room

from fsm_worker.server.board import BoardLimits, RoomBoard


@attrs.frozen
class Peer:
    peer_id: str
    role: str
    metadata: dict[str, Any]


def worker(status: str, job: dict[str, Any] | None = None, last: dict[str, Any] | None = None) -> Peer:
    metadata: dict[str, Any] = {
        "properties": {"status": status, "gpu_model": "T4", "secret": "x"},
        "job": job,
    }
    if last is not None:
        metadata["last_job"] = last
    return Peer("w-1", "worker", metadata)


def running(progress: float, elapsed: float, loss: float | None = None) -> dict[str, Any]:
    job: dict[str, Any] = {"run": 1, "job_type": "t", "status": "running", "progress": progress,
                           "elapsed_seconds": elapsed}  # fmt: skip
    if loss is not None:
        job["metrics"] = {"loss": loss}
    return job


def test_a_job_is_followed_from_start_to_its_end() -> None:
    board = RoomBoard()
    assert board.observe([worker("available"), Peer("c-1", "client", {})], now=0.0)
    view = board.view()
    assert view["clients"] == 1 and view["workers"][0]["status"] == "available"
    assert "secret" not in view["workers"][0]  # only the documented worker fields are shown
    assert board.observe([worker("busy", running(0.1, 1.0, loss=0.9))], now=1.0)
    assert not board.observe([worker("busy", running(0.1, 1.0, loss=0.9))], now=2.0)  # nothing new
    assert board.observe([worker("busy", running(0.5, 2.0, loss=0.4))], now=3.0)
    assert board.view()["series"]["w-1 #1"] == [[1.0, 0.1, 0.9], [2.0, 0.5, 0.4]]
    assert board.view()["workers"][0]["job"]["label"] == "w-1 #1"
    last = {"run": 1, "job_type": "t", "outcome": "completed", "duration_seconds": 2.5}
    assert board.observe([worker("available", None, last)], now=4.0)
    (recent,) = board.view()["recent_jobs"]
    assert recent == {"label": "w-1 #1", "worker": "w-1", "job_type": "t", "outcome": "completed",
                      "duration_seconds": 2.5, "seen_at": 4.0}  # fmt: skip
    assert not board.observe([worker("available", None, last)], now=5.0)  # the same end counts once
    again = {**last, "duration_seconds": 7.0}  # a restarted worker's run 1 ended too: a new end
    assert board.observe([worker("available", None, again)], now=6.0)
    assert [job["duration_seconds"] for job in board.view()["recent_jobs"]] == [7.0]


def test_a_published_job_id_is_neither_needed_nor_shown() -> None:
    board = RoomBoard()
    job = {**running(0.5, 1.0), "job_id": "secret-job"}
    del job["run"]
    board.observe([worker("busy", job, {"job_id": "secret-job", "job_type": "t", "outcome": "failed"})], 1.0)
    assert "secret-job" not in json.dumps(board.view())  # no run number: not a job the board follows


def test_what_the_board_keeps_is_bounded() -> None:
    board = RoomBoard(BoardLimits(recent_jobs=2, series_jobs=1, points_per_job=10))
    for step in range(30):
        board.observe([worker("busy", running(step / 30, float(step)))], now=float(step))
    points = board.view()["series"]["w-1 #1"]
    assert 5 <= len(points) <= 10 and points[-1][0] == 29.0 and points[0][0] == 0.0
    for index in range(4):
        job = {**running(0.5, 1.0), "run": 10 + index}
        last = {"run": 10 + index, "job_type": "t", "outcome": "failed", "duration_seconds": 1}
        board.observe([worker("busy", job, last)], now=100.0 + index)
    assert [job["label"] for job in board.view()["recent_jobs"]] == ["w-1 #13", "w-1 #12"]
    assert list(board.view()["series"]) == ["w-1 #13"]


def test_malformed_metadata_is_shown_as_far_as_it_goes() -> None:
    board = RoomBoard()
    odd = [
        Peer("w-2", "worker", {"properties": "nope", "job": "x", "last_job": 5}),
        Peer("w-3", "worker", {}),
    ]
    board.observe(odd, now=0.0)
    assert [w["peer_id"] for w in board.view()["workers"]] == ["w-2", "w-3"]
    assert board.view()["series"] == {} and board.view()["recent_jobs"] == []


async def test_logins_are_bounded_and_the_feed_streams_the_board(room: Room) -> None:
    await room.stop_server()
    await room.start_server(dashboard_max_sessions=1, dashboard_refresh_seconds=0.1)
    await room.worker()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # unsafe: an IP host
        async with http.post(f"{room.url}/dashboard/login", json={"token": room.token}) as response:
            assert response.status == 200
            assert (
                "HttpOnly" in response.headers["Set-Cookie"]
                and room.token not in response.headers["Set-Cookie"]
            )
        async with http.get(f"{room.url}/dashboard/events") as feed:
            assert feed.headers["Content-Type"] == "text/event-stream"
            line = await feed.content.readline()
            board = json.loads(line.decode().removeprefix("data: "))
        assert [w["peer_id"] for w in board["workers"]] == ["worker-1"]
        assert board["workers"][0]["status"] == "available"
    async with (
        aiohttp.ClientSession() as other,
        other.post(f"{room.url}/dashboard/login", json={"token": room.token}) as refused,
    ):
        assert refused.status == 503
        assert "dashboard_max_sessions (1)" in (await refused.json())["message"]
