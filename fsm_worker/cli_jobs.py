"""`fsm-worker submit`, `attach` and `cancel`: a job from the command line, followable from another process."""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fsm_worker import job_state
from fsm_worker.cli_options import (
    ConnectionOptions,
    IceOptions,
    JobChoice,
    RtcOptions,
    StateOptions,
    SubmitOptions,
    command_settings,
)
from fsm_worker.client import ClientTimeouts, JobClient
from fsm_worker.client.api import Job, JobOutcome
from fsm_worker.job_state import JobRecord
from fsm_worker.progress import JobProgress
from fsm_worker.protocol.messages import JobCancelled, Requirements
from fsm_worker.protocol.transfer.download import DownloadLimits
from fsm_worker.settings import Settings, SettingsError


def _job_config(entries: Sequence[str]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for entry in entries:
        key, sep, raw = entry.partition("=")
        if not sep or not key:
            raise SettingsError(f"--config {entry!r}: expected KEY=VALUE")
        try:
            config[key] = json.loads(raw)
        except json.JSONDecodeError:
            config[key] = raw
    return config


def run_until_signalled(main: Callable[[], Coroutine[Any, Any, int]], console: Console) -> int:
    """Run `main`; SIGINT or SIGTERM cancels it (it cleans up as it unwinds) and gives 128 + the signal.

    The handlers are installed explicitly, so a `submit` started in the background of a non-interactive shell
    (which inherits SIGINT ignored) still obeys SIGINT.
    """
    received: list[int] = []

    async def guarded() -> int:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None

        def on_signal(signum: int) -> None:
            received.append(signum)
            task.cancel()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        return await main()

    try:
        return asyncio.run(guarded())
    except (asyncio.CancelledError, KeyboardInterrupt):
        if not received:
            raise
        console.print("[yellow]interrupted: the job was cancelled[/yellow]")
        return 128 + received[0]


async def _follow(job: Job, progress: JobProgress, out: Path, console: Console) -> JobOutcome:
    """Show the job's events, then download its results; cancelled (by a signal) → cancel the job."""
    try:
        async for event in job.events():
            progress.event(event)
        return await job.result(out, on_download=progress.download, job_folder=True)  # out/<job_id>/
    except asyncio.CancelledError:
        console.log("cancelling ...")
        await asyncio.shield(job.cancel())
        raise


def _print_outcome(outcome: JobOutcome) -> None:
    table = Table(title=f"job {outcome.job_id} completed on {outcome.worker_id}")
    table.add_column("what")
    table.add_column("value")
    table.add_row("training", f"{outcome.training_duration_minutes * 60:.2f} s")
    table.add_row("model size", f"{outcome.model_size_mb} MB")
    for name, seconds in outcome.phases.items():
        table.add_row(name, f"{seconds:.3f} s")
    for path in outcome.files:
        table.add_row("result", str(path))
    Console().print(table)


def _client(settings: Settings, command: str, record: JobRecord | None = None) -> JobClient:
    """The command's client; with a `record`, under the submitting process's peer id and resume secret (the
    worker answers that client only), and the server the record names unless one is set."""
    fixed = {"server": record.server} if record is not None and settings.lookup("server") is None else {}
    connection = settings.build(ConnectionOptions, command_settings(command, ConnectionOptions), **fixed)
    timeouts = settings.build(ClientTimeouts, command_settings(command, ClientTimeouts))
    extra: dict[str, Any] = {}
    if record is not None:
        extra = {"peer_id": record.client_id, "resume_secret": record.resume_secret}
    if command != "cancel":
        rtc = settings.build(RtcOptions, command_settings(command, RtcOptions))
        ice = settings.build(IceOptions, command_settings(command, IceOptions))
        limits = settings.build(DownloadLimits, command_settings(command, DownloadLimits))
        extra |= {
            "download_limits": limits,
            "ice_servers": ice.servers(),
            "loopback_only": rtc.loopback_only,
            "rtc_fast_path": rtc.rtc_fast_path,
        }
    return JobClient(connection.server, connection.token, timeouts=timeouts, **extra)


def cmd_submit(settings: Settings) -> int:
    options = settings.build(SubmitOptions, command_settings("submit", SubmitOptions))
    state_dir = settings.build(StateOptions, command_settings("submit", StateOptions)).state_dir
    inputs = [Path(path) for path in options.input]
    for path in inputs:
        if not path.is_file():
            raise SettingsError(f"--input {path}: no such file")
    config = _job_config(options.job_config)
    client = _client(settings, "submit")
    console = Console(stderr=True)

    async def main() -> int:
        async with client:
            with JobProgress(console) as progress:
                job = await client.submit(
                    options.job_type,
                    config,
                    inputs,
                    Requirements(options.min_gpu_memory_mb, gpus=options.job_gpus),
                    bid_window=options.bid_window,
                    on_upload=progress.upload,
                    queue=options.wait,
                )
                assert job.worker_id is not None
                record = JobRecord(
                    job.job_id,
                    job.worker_id,
                    client.peer_id,
                    client.signaling.url,
                    client.resume_secret,
                    getattr(job, "job_key", None),
                    options.job_type,
                )
                job_state.save(state_dir, record)
                if job.queued:
                    progress.queued(job.queue_position, job.estimated_start_seconds)
                    place = f" at position {job.queue_position}" if job.queue_position else ""
                    console.log(f"job {job.job_id} queued{place} on {job.worker_id}")
                else:
                    console.log(f"job {job.job_id} running on {job.worker_id}")
                console.log(f"to follow it from elsewhere: fsm-worker attach --job-id {job.job_id}")
                try:
                    outcome = await _follow(job, progress, options.out, console)
                finally:
                    if job.terminal is not None:
                        job_state.forget(state_dir, job.job_id)
        _print_outcome(outcome)
        return 0

    return run_until_signalled(main, console)


async def _attach(client: JobClient, record: JobRecord) -> Job:
    parameters = inspect.signature(client.attach).parameters
    if record.job_key and "job_key" in parameters:
        return await client.attach(record.job_id, record.worker_id, job_key=record.job_key)  # type: ignore[call-arg]
    return await client.attach(record.job_id, record.worker_id)


def _record(settings: Settings, command: str) -> tuple[JobRecord, JobChoice, Path]:
    choice = settings.build(JobChoice, command_settings(command, JobChoice))
    state_dir = settings.build(StateOptions, command_settings(command, StateOptions)).state_dir
    return job_state.load(state_dir, choice.job_id), choice, state_dir


def cmd_attach(settings: Settings) -> int:
    record, choice, state_dir = _record(settings, "attach")
    client = _client(settings, "attach", record)
    console = Console(stderr=True)

    async def main() -> int:
        async with client:
            job = await _attach(client, record)
            console.log(f"attached to job {job.job_id} on {job.worker_id}")
            with JobProgress(console) as progress:
                try:
                    outcome = await _follow(job, progress, choice.out, console)
                finally:
                    if job.terminal is not None:
                        job_state.forget(state_dir, job.job_id)
        _print_outcome(outcome)
        return 0

    return run_until_signalled(main, console)


def cmd_cancel(settings: Settings) -> int:
    record, _, state_dir = _record(settings, "cancel")
    client = _client(settings, "cancel", record)

    async def main() -> int:
        async with client:
            job = await _attach(client, record)
            await job.cancel()
            if job.terminal is None:
                await job.wait()
        job_state.forget(state_dir, record.job_id)
        terminal = job.terminal
        if isinstance(terminal, JobCancelled):
            print(f"job {record.job_id} cancelled on {record.worker_id}")
            return 0
        kind = terminal.TYPE if terminal is not None else "unknown"
        print(f"job {record.job_id} had already ended ({kind}); nothing to cancel")
        return 0

    return asyncio.run(main())
