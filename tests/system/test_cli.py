"""The command line as a user runs it: real processes for the server, the worker, `submit`, `status`, `demo`."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from support import cli_processes
from support.cli_processes import CLI
from support.signaling import free_port

from fsm_worker.jobs.sample_data import generate_sample_csv
from fsm_worker.jobs.train_demo import load_model

TIMEOUT = 60.0


async def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def start(*args: str, ready: str) -> asyncio.subprocess.Process:
    return await cli_processes.start(*args, ready=ready, timeout=TIMEOUT)


async def stop(proc: asyncio.subprocess.Process) -> int:
    return await cli_processes.stop(proc, TIMEOUT)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """`fsm-worker server` and `fsm-worker worker` as separate processes; yields (url, token)."""
    token, port = secrets.token_hex(12), free_port()
    url = f"http://127.0.0.1:{port}"
    server = await start("server", "--port", str(port), "--token", token, ready="listening on")
    worker = await start(
        "worker",
        "--server",
        url,
        "--token",
        token,
        "--peer-id",
        "cli-worker",
        "--gpu-memory-mb",
        "8192",
        "--workdir",
        str(tmp_path / "worker"),
        ready="connected",
    )
    try:
        yield url, token
    finally:
        assert await stop(worker) == 0, "the worker did not shut down cleanly on SIGTERM"
        await stop(server)


async def test_submit_and_status_against_a_real_server_and_worker(
    cluster: tuple[str, str], tmp_path: Path
) -> None:
    url, token = cluster
    data = generate_sample_csv(tmp_path / "data.csv", rows=2000, features=4, seed=5)
    code, out, _ = await run("status", "--server", url, "--token", token)
    assert code == 0 and "cli-worker" in out and "available" in out

    code, out, err = await run(
        "submit",
        "--server",
        url,
        "--token",
        token,
        "--job-type",
        "train-demo",
        "--input",
        str(data),
        "--config",
        "epochs=5",
        "--config",
        "learning_rate=0.05",
        "--min-gpu-memory-mb",
        "4096",
        "--out",
        str(tmp_path / "results"),
    )
    assert code == 0, err
    assert "completed on cli-worker" in out and "model.npz" in out
    (job_dir,) = (tmp_path / "results").iterdir()  # results/<job_id>/: a folder of the job's own
    assert job_dir.name.startswith("job-") and f"job {job_dir.name} running" in err
    model = load_model(job_dir / "model.npz")
    assert model.predict(np.zeros((1, 4))) in (["0"], ["1"])


async def test_submit_with_settings_from_environment_and_toml(
    cluster: tuple[str, str], tmp_path: Path
) -> None:
    url, token = cluster
    settings = tmp_path / "fsm.toml"
    settings.write_text(
        f'server = "{url}"\n[submit]\njob_type = "train-demo"\nout = "{tmp_path / "toml-out"}"\n'
    )
    data = generate_sample_csv(tmp_path / "data.csv", rows=500, features=3, seed=1)
    code, _, err = await run(
        "submit",
        "--settings",
        str(settings),
        "--input",
        str(data),
        "--config",
        "epochs=2",
        env={"FSM_WORKER_TOKEN": token},
    )
    assert code == 0, err
    assert [p.name for p in (tmp_path / "toml-out").glob("*/model.npz")] == ["model.npz"]


async def test_clear_errors_for_bad_settings(tmp_path: Path) -> None:
    code, _, err = await run("submit", "--job-type", "train-demo")
    assert code == 2 and "--server is required" in err
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = await run(
        "status",
        "--server",
        url,
        "--token",
        "t",
        "--connect-timeout",
        "1",
        env={"FSM_WORKER_LOG_LEVEL": "CRITICAL"},
    )
    assert code == 1 and f"could not reach the signaling server at {url} within 1 s" in err
    assert "Traceback" not in err


async def test_demo_runs_a_real_job_end_to_end(tmp_path: Path) -> None:
    code, out, err = await run(
        "demo", "--workdir", str(tmp_path), "--rows", "3000", "--epochs", "5", timeout=120
    )
    assert code == 0, err
    match = re.search(r"trained model: (\S+model\.npz)", out)
    assert match, out
    assert Path(match.group(1)).is_file() and (tmp_path / "results" / "metrics.json").is_file()
    for phase in (
        "reserve a worker",
        "open the data channel",
        "upload inputs",
        "training",
        "download results",
    ):
        assert phase in out


def test_help_has_examples() -> None:
    import subprocess

    for command in ("server", "worker", "submit", "attach", "cancel", "status", "demo", "diagram"):
        result = subprocess.run(
            [*CLI, command, "--help"], capture_output=True, text=True, timeout=TIMEOUT, check=True
        )
        assert "example:" in result.stdout and "fsm-worker " + command in result.stdout


async def test_ctrl_c_cancels_the_job(cluster: tuple[str, str], tmp_path: Path) -> None:
    url, token = cluster
    data = generate_sample_csv(tmp_path / "data.csv", rows=5000, features=4, seed=2)
    proc = await asyncio.create_subprocess_exec(
        *CLI, "submit", "--server", url, "--token", token, "--job-type", "train-demo", "--input", str(data),
        "--config", "epochs=10000", "--out", str(tmp_path / "results"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    assert proc.stderr is not None
    async with asyncio.timeout(TIMEOUT):
        while "running on cli-worker" not in (line := (await proc.stderr.readline()).decode()):
            assert line, "submit exited before the job ran"
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(TIMEOUT):
        _, err = await proc.communicate()
    assert proc.returncode == 130, err.decode()
    assert "the job was cancelled" in err.decode()
    code, out, _ = await run("status", "--server", url, "--token", token)
    assert code == 0 and "available" in out and "busy" not in out


# --- a job followed, cancelled and interrupted from the command line (issue 11) ------------------------------


async def _submit_until_running(
    url: str, token: str, data: Path, out: Path, state_dir: Path, *, epochs: int, ignore_sigint: bool = False
) -> asyncio.subprocess.Process:
    """A background `submit`, returned once its job runs (optionally started with SIGINT ignored, as a
    non-interactive shell starts a background job)."""

    def ignore() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = await asyncio.create_subprocess_exec(
        *CLI, "submit", "--server", url, "--token", token, "--job-type", "train-demo", "--input", str(data),
        "--config", f"epochs={epochs}", "--out", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120", "FSM_WORKER_STATE_DIR": str(state_dir)},
        preexec_fn=ignore if ignore_sigint else None,
    )  # fmt: skip
    assert proc.stderr is not None
    async with asyncio.timeout(TIMEOUT):
        while "running on cli-worker" not in (line := (await proc.stderr.readline()).decode()):
            assert line, "submit exited before the job ran"
    return proc


async def _worker_available(url: str, token: str) -> bool:
    code, out, _ = await run("status", "--server", url, "--token", token)
    return code == 0 and "available" in out and "busy" not in out


@pytest.mark.parametrize(
    ("signum", "ignore_sigint", "code"),
    [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)],
    ids=["sigterm", "sigint-inherited-ignored"],
)
async def test_a_signal_to_submit_cancels_the_job(
    cluster: tuple[str, str], tmp_path: Path, signum: int, ignore_sigint: bool, code: int
) -> None:
    url, token = cluster
    data = generate_sample_csv(tmp_path / "data.csv", rows=5000, features=4, seed=2)
    proc = await _submit_until_running(
        url, token, data, tmp_path / "out", tmp_path / "state", epochs=10000, ignore_sigint=ignore_sigint
    )
    proc.send_signal(signum)
    async with asyncio.timeout(TIMEOUT):
        _, err = await proc.communicate()
    assert proc.returncode == code, err.decode()
    assert "the job was cancelled" in err.decode()
    assert await _worker_available(url, token)


async def test_cancel_a_job_whose_submit_died(cluster: tuple[str, str], tmp_path: Path) -> None:
    url, token = cluster
    data = generate_sample_csv(tmp_path / "data.csv", rows=5000, features=4, seed=3)
    state = tmp_path / "state"
    proc = await _submit_until_running(url, token, data, tmp_path / "out", state, epochs=10000)
    [record] = (state / "jobs").glob("*.json")
    assert record.stat().st_mode & 0o777 == 0o600  # it holds the client's resume secret
    proc.kill()
    await proc.wait()
    assert not await _worker_available(url, token)  # the job trains on without its submit
    code, out, err = await run("cancel", "--token", token, env={"FSM_WORKER_STATE_DIR": str(state)})
    assert code == 0, err
    assert "cancelled on cli-worker" in out
    assert await _worker_available(url, token)
    assert not record.exists()


async def test_attach_follows_a_job_to_its_results(cluster: tuple[str, str], tmp_path: Path) -> None:
    url, token = cluster
    data = generate_sample_csv(tmp_path / "data.csv", rows=3000, features=4, seed=4)
    state = tmp_path / "state"
    proc = await _submit_until_running(url, token, data, tmp_path / "lost", state, epochs=200)
    proc.kill()
    await proc.wait()
    [record] = (state / "jobs").glob("*.json")
    job_id = record.stem
    code, out, err = await run(
        "attach", "--token", token, "--job-id", job_id, "--out", str(tmp_path / "attached"),
        env={"FSM_WORKER_STATE_DIR": str(state)},
    )  # fmt: skip
    assert code == 0, err
    assert f"job {job_id} completed on cli-worker" in out
    model = load_model(next((tmp_path / "attached").rglob("model.npz")))
    assert model.predict(np.zeros((1, 4))) in (["0"], ["1"])
    code, _, err = await run("attach", "--token", token, env={"FSM_WORKER_STATE_DIR": str(state)})
    assert code == 2 and "no job to follow" in err  # the record is gone once the job has ended


async def test_worker_loads_job_types_from_a_module(tmp_path: Path) -> None:
    token, port = secrets.token_hex(12), free_port()
    url = f"http://127.0.0.1:{port}"
    server = await start("server", "--port", str(port), "--token", token, ready="listening on")
    try:
        worker = await start(
            "worker", "--server", url, "--token", token, "--peer-id", "plugin-worker", "--workdir",
            str(tmp_path / "w"), "--job-types-from", "fsm_worker.examples.word_count:registry", ready="connected",
        )  # fmt: skip
        try:
            code, out, _ = await run("status", "--server", url, "--token", token)
            assert code == 0 and "plugin-worker" in out and "word-count" in out
        finally:
            assert await stop(worker) == 0
        code, _, err = await run(
            "worker",
            "--server",
            url,
            "--token",
            token,
            "--job-types-from",
            "fsm_worker.examples.word_count:nope",
        )
        assert code == 2 and "has no attribute 'nope'" in err
    finally:
        await stop(server)
