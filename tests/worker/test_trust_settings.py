"""The trust limits that were hard-coded are settings now, and each reaches the code that enforces it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fsm_worker import cli
from fsm_worker.cli_jobs import _client
from fsm_worker.protocol.errors import SignalingCode
from fsm_worker.protocol.transfer import download as dl
from fsm_worker.protocol.transfer.errors import FrameCode
from fsm_worker.protocol.transfer.frames import Results
from fsm_worker.protocol.transfer.upload_steps import FrameIn
from fsm_worker.settings import Settings, SettingsError
from fsm_worker.shells.send_queue import SendStatus
from fsm_worker.worker import WorkerConfig, WorkerHost

MiB = 1024 * 1024


def _worker_config(argv: list[str], workdir: Path) -> WorkerConfig:
    args = cli._parser().parse_args(
        ["worker", "--server", "http://127.0.0.1:9", "--token", "t", "--peer-id", "w", "--workdir",
         str(workdir), "--no-journal", *argv]
    )  # fmt: skip
    return cli.worker_config(Settings(args, {}))


def _stored(root: Path, name: str, size: int, age: float) -> None:
    path = root / (name * 64)
    path.write_bytes(b"x" * size)
    then = time.time() - age
    os.utime(path, (then, then))


def test_store_quota_and_retention_reach_the_content_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FSM_WORKER_STORE_QUOTA_MB", "1")
    host = WorkerHost(_worker_config(["--store-retention", "100"], tmp_path / "wd"))
    store = host.channels.store
    assert (store.quota_bytes, store.retention) == (MiB, 100.0)
    _stored(store.root, "a", 600 * 1024, age=50)  # older: evicted by the 1 MiB quota
    _stored(store.root, "b", 600 * 1024, age=10)  # newer: kept
    _stored(store.root, "c", 10, age=200)  # past the 100 s retention
    assert store.collect() == 600 * 1024 + 10
    assert sorted(p.name[0] for p in store.root.iterdir()) == ["b"]


async def test_link_limits_reach_the_workers_signaling_link(tmp_path: Path) -> None:
    host = WorkerHost(
        _worker_config(["--max-queued-per-peer", "2", "--max-inflight-per-peer", "3"], tmp_path / "wd")
    )
    link = host.signaling
    assert link._queues.window == 3
    posted = [link.post("client-a", {"type": "x", "n": n}) for n in range(3)]  # the link is down: they wait
    refused = posted[2].result()
    assert refused.status is SendStatus.REFUSED and refused.code == SignalingCode.QUEUE_FULL
    assert "max_queued_per_peer=2" in (refused.message or "")
    assert not posted[0].done() and not posted[1].done()
    other = link.post("client-b", {"type": "x"})  # another peer's queue is not full
    assert not other.done()
    for future in (*posted[:2], other):
        future.cancel()


@pytest.mark.parametrize(
    ("argv", "env", "toml", "required"),
    [
        ([], None, {}, True),  # the default: a per-job key is required
        (["--no-require-job-key"], None, {}, False),
        ([], "false", {}, False),
        ([], None, {"require_job_key": False}, False),
        (["--require-job-key"], "false", {}, True),  # a flag beats the environment
    ],
)
def test_require_job_key_is_on_by_default_and_its_owner_can_turn_it_off(
    argv: list[str],
    env: str | None,
    toml: dict[str, object],
    required: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env is not None:
        monkeypatch.setenv("FSM_WORKER_REQUIRE_JOB_KEY", env)
    args = cli._parser().parse_args(
        ["worker", "--server", "http://127.0.0.1:9", "--token", "t", "--peer-id", "w", "--workdir",
         str(tmp_path / "wd"), "--no-journal", *argv]
    )  # fmt: skip
    host = WorkerHost(cli.worker_config(Settings(args, toml)))
    assert host.core.config.require_job_key is required


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--store-quota-mb", "-1"], "store_quota_mb must be at least 0"),
        (["--store-retention", "-5"], "store_retention must be at least 0"),
        (["--max-inflight-per-peer", "0"], "max_inflight_per_peer must be at least 1"),
        (["--max-queued-per-peer", "0"], "max_queued_per_peer must be at least 1"),
        (["--max-input-files", "0"], "max_input_files must be at least 1"),
        (["--max-queued-per-peer", "many"], "--max-queued-per-peer: not a whole number"),
    ],
)
def test_bad_worker_limits_are_refused_naming_the_setting(
    argv: list[str], named: str, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=named):
        _worker_config(argv, tmp_path)


def test_download_caps_are_settings_of_submit_and_attach_and_reach_the_download(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FSM_WORKER_MAX_DOWNLOAD_BYTES", "5000")
    args = cli._parser().parse_args(["submit", "--server", "http://h:1", "--token", "t", "--job-type", "x",
                                     "--max-download-files", "2"])  # fmt: skip
    limits = _client(Settings(args, {}), "submit")._link.download_limits
    assert limits == dl.DownloadLimits(max_files=2, max_bytes=5000)
    refused = dl.DownloadReceiver(limits).handle(FrameIn(Results(count=3, total_size=3)), 0.0)
    assert refused == [
        dl.DownloadFailed(
            FrameCode.TOO_MANY_FILES, "the worker announces 3 result files (max_download_files = 2)"
        )
    ]
    attach = cli._parser().parse_args(["attach", "--server", "http://h:1", "--token", "t"])
    assert _client(Settings(attach, {}), "attach")._link.download_limits.max_bytes == 5000
    monkeypatch.setenv("FSM_WORKER_MAX_DOWNLOAD_FILES", "-1")
    with pytest.raises(SettingsError, match="max_download_files must be at least 0"):
        _client(Settings(attach, {}), "attach")
