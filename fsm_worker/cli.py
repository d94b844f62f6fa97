"""`fsm-worker`: the command line over the server, the worker host and the client API.

Configuration: flags, then FSM_WORKER_* environment variables, then a TOML file (--settings), in that order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fsm_worker import diagrams, logs
from fsm_worker.client import ClientTimeouts, JobClient, JobClientError
from fsm_worker.progress import JobProgress
from fsm_worker.protocol.messages import Requirements
from fsm_worker.server.config import ServerConfig
from fsm_worker.server.server import RunningServer, run_server
from fsm_worker.settings import Settings, SettingsError, as_bool, load_toml, optional
from fsm_worker.shells.rtc.config import IceServerConfig
from fsm_worker.shells.rtc.session import RtcSetupError
from fsm_worker.shells.signaling import SignalingError
from fsm_worker.shells.transfer.errors import TransferError
from fsm_worker.worker import WorkerConfig, WorkerHost

log = logging.getLogger("fsm_worker.cli")

EXAMPLES = {
    "server": "fsm-worker server --port 8765 --token s3cret\n  fsm-worker server --token A --token B --redis redis://127.0.0.1:6379/0",
    "worker": "fsm-worker worker --server http://127.0.0.1:8765 --token s3cret --gpu-memory-mb 8192",
    "submit": "fsm-worker submit --server http://127.0.0.1:8765 --token s3cret --job-type train-demo \\\n"
    "      --input data.csv --config epochs=20 --config learning_rate=0.05 --out results/",
    "status": "fsm-worker status --server http://127.0.0.1:8765 --token s3cret",
    "demo": "fsm-worker demo",
    "diagram": "fsm-worker diagram --out diagrams/",
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--settings",
        dest="settings_file",
        metavar="FILE",
        help="TOML settings file (also FSM_WORKER_SETTINGS)",
    )
    common.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    common.add_argument("--json-logs", action="store_const", const=True, help="log one JSON object per line")

    parser = argparse.ArgumentParser(
        prog="fsm-worker",
        description="A remote job worker: signaling server, worker host and client. "
        "Settings come from flags, FSM_WORKER_* variables, or a TOML file (--settings), in that order.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[common],
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    server = command("server", "Run the signaling server.")
    server.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    server.add_argument("--port", type=int, help="port (default 8765; 0 picks a free one)")
    server.add_argument(
        "--token", action="append", help="room token; repeat for several rooms (default: generated)"
    )
    server.add_argument("--redis", help="redis://HOST:PORT/DB: share state with other server processes")
    server.add_argument("--resume-grace", type=float, help="seconds a dropped peer keeps its id (default 30)")

    def connection(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--server", help="signaling server URL, e.g. http://127.0.0.1:8765")
        sub.add_argument("--token", help="room token")
        sub.add_argument("--connect-timeout", type=float, help="seconds to reach the server (default 10)")

    worker = command("worker", "Run a worker host.")
    connection(worker)
    worker.add_argument("--peer-id", help="this worker's id (default: worker-<hostname>-<random>)")
    worker.add_argument("--gpu-memory-mb", type=int, help="override the detected GPU memory")
    worker.add_argument("--gpu-model", help="override the detected GPU model")
    worker.add_argument("--cuda-version", help="override the detected CUDA version")
    worker.add_argument("--job-types", help="comma-separated job types to offer (default: all configured)")
    worker.add_argument("--tags", help="comma-separated discovery tags")
    worker.add_argument(
        "--reservation-timeout", type=float, help="seconds a reservation waits for assignment (30)"
    )
    worker.add_argument(
        "--input-timeout", type=float, help="seconds an assigned job waits for its inputs (1800)"
    )
    worker.add_argument("--retention", type=float, help="seconds results stay fetchable (3600)")
    worker.add_argument("--job-timeout", type=float, help="seconds a run may take (default: unlimited)")
    worker.add_argument("--workdir", help="job files and the content store (default ~/.cache/fsm-worker)")
    worker.add_argument("--max-upload-mb", type=int, help="largest upload per job in MB (10240)")
    worker.add_argument("--shutdown-policy", choices=("finish", "cancel"), help="on SIGINT/SIGTERM (finish)")
    worker.add_argument("--ice-server", action="append", help="STUN/TURN URL; repeat for several")
    worker.add_argument("--ice-username", help="TURN username")
    worker.add_argument("--ice-credential", help="TURN password (better: FSM_WORKER_ICE_CREDENTIAL)")

    submit = command("submit", "Submit a job and follow it to its results.")
    connection(submit)
    submit.add_argument("--job-type", help="e.g. train-demo")
    submit.add_argument("--input", action="append", help="input file; repeat for several")
    submit.add_argument(
        "--config",
        dest="job_config",
        action="append",
        metavar="KEY=VALUE",
        help="job config entry (JSON value or string); repeat",
    )
    submit.add_argument(
        "--min-gpu-memory-mb", type=int, help="only workers with at least this much GPU memory"
    )
    submit.add_argument("--out", help="directory for the results (default ./results)")
    submit.add_argument("--bid-window", type=float, help="seconds to collect offers and take the fastest (0)")
    submit.add_argument("--ice-server", action="append", help="STUN/TURN URL; repeat for several")
    submit.add_argument("--ice-username", help="TURN username")
    submit.add_argument("--ice-credential", help="TURN password (better: FSM_WORKER_ICE_CREDENTIAL)")

    status = command("status", "Show the workers in a room.")
    connection(status)

    demo = command("demo", "Run server, worker and client on loopback with a real training job.")
    demo.add_argument(
        "--workdir", help="where the dataset, worker files and results go (default: a temp dir)"
    )
    demo.add_argument("--rows", type=int, help="rows in the generated dataset (20000)")
    demo.add_argument("--epochs", type=int, help="training epochs (30)")
    demo.add_argument(
        "--sleap", action="store_true", help="train a tiny real SLEAP model (needs the sleap extra)"
    )

    diagram = command("diagram", "Regenerate the state diagrams from the transition table.")
    diagram.add_argument("--out", help="directory (default: the repository's diagrams/)")
    return parser


# --- commands -------------------------------------------------------------------------------------------------


def _require(settings: Settings, name: str) -> str:
    value = settings.get(name, "")
    if not value:
        flag = name.replace("_", "-")
        raise SettingsError(
            f"--{flag} is required (or FSM_WORKER_{name.upper()}, or {name} in the config file)"
        )
    return value


def _timeouts(settings: Settings) -> ClientTimeouts:
    return ClientTimeouts(connect=settings.get("connect_timeout", 10.0, float))


def _ice(settings: Settings) -> tuple[IceServerConfig, ...]:
    """STUN/TURN servers; the username and credential apply to the TURN ones."""
    username = settings.get("ice_username", None, optional(str))
    credential = settings.get("ice_credential", None, optional(str))
    return tuple(
        IceServerConfig(url, username, credential) if url.startswith("turn") else IceServerConfig(url)
        for url in settings.get_list("ice_server")
    )


async def _until_signalled(stop: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)


def cmd_server(settings: Settings) -> int:
    tokens = settings.get_list("token")
    if not tokens:
        tokens = [secrets.token_hex(16)]
        print(f"generated token: {tokens[0]}", flush=True)
    config = ServerConfig(
        tokens=tokens,
        host=settings.get("host", "127.0.0.1"),
        port=settings.get("port", 8765, int),
        redis_url=settings.get("redis", None, optional(str)),
        resume_grace_seconds=settings.get("resume_grace", 30.0, float),
    )

    def ready(running: RunningServer) -> None:
        print(
            f"signaling server listening on {running.url} ({len(tokens)} room(s)"
            f"{', redis ' + config.redis_url if config.redis_url else ''})",
            flush=True,
        )

    asyncio.run(run_server(config, ready=ready))
    return 0


def worker_config(settings: Settings) -> WorkerConfig:
    options: dict[str, Any] = {
        "job_types": tuple(settings.get_list("job_types")),
        "tags": tuple(settings.get_list("tags")),
        "gpu_memory_mb": settings.get("gpu_memory_mb", None, optional(int)),
        "gpu_model": settings.get("gpu_model", None, optional(str)),
        "cuda_version": settings.get("cuda_version", None, optional(str)),
        "reservation_timeout": settings.get("reservation_timeout", 30.0, float),
        "input_timeout": settings.get("input_timeout", 1800.0, float),
        "retention": settings.get("retention", 3600.0, float),
        "job_timeout": settings.get("job_timeout", None, optional(float)),
        "max_upload_bytes": settings.get("max_upload_mb", 10240, int) * 1024 * 1024,
        "shutdown_policy": settings.get("shutdown_policy", "finish"),
        "ice_servers": _ice(settings),
    }
    peer_id = settings.get("peer_id", None, optional(str))
    workdir = settings.get("workdir", None, optional(str))
    if peer_id:
        options["peer_id"] = peer_id
    if workdir:
        options["workdir"] = Path(workdir)
    return WorkerConfig(_require(settings, "server"), _require(settings, "token"), **options)


def cmd_worker(settings: Settings) -> int:
    config = worker_config(settings)

    async def main() -> None:
        host = WorkerHost(config)
        stopping: list[asyncio.Task[None]] = []

        def stop() -> None:  # the first signal shuts down gracefully; the second also stops a running job
            stopping.append(asyncio.ensure_future(host.shutdown()))

        await _until_signalled(stop)
        await host.start()
        print(
            f"worker {host.peer_id} connected to {config.server_url} "
            f"({host.capabilities.gpu_model}, {host.capabilities.gpu_memory_mb} MB)",
            flush=True,
        )
        await host.wait_closed()

    asyncio.run(main())
    return 0


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


def cmd_submit(settings: Settings) -> int:
    url, token = _require(settings, "server"), _require(settings, "token")
    job_type = _require(settings, "job_type")
    inputs = [Path(path) for path in settings.get_list("input")]
    for path in inputs:
        if not path.is_file():
            raise SettingsError(f"--input {path}: no such file")
    config = _job_config(settings.get_list("job_config"))
    requirements = Requirements(settings.get("min_gpu_memory_mb", 0, int))
    out = Path(settings.get("out", "results"))
    console = Console(stderr=True)

    async def main() -> int:
        async with JobClient(url, token, ice_servers=_ice(settings), timeouts=_timeouts(settings)) as client:
            with JobProgress(console) as progress:
                job = await client.submit(
                    job_type,
                    config,
                    inputs,
                    requirements,
                    bid_window=settings.get("bid_window", 0.0, float),
                    on_upload=progress.upload,
                )
                console.log(f"job {job.job_id} running on {job.worker_id}")
                try:
                    async for event in job.events():
                        progress.event(event)
                except asyncio.CancelledError:
                    console.log("cancelling ...")
                    await asyncio.shield(job.cancel())
                    raise
                outcome = await job.result(out, on_download=progress.download)
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
        return 0

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: the job was cancelled[/yellow]")
        return 130


def cmd_status(settings: Settings) -> int:
    url, token = _require(settings, "server"), _require(settings, "token")

    async def main() -> None:
        async with JobClient(url, token, timeouts=_timeouts(settings)) as client:
            workers = await client.discover_workers()
        table = Table(title=f"{len(workers)} worker(s)")
        for column in ("worker", "status", "GPU", "memory (MB)", "job", "job types"):
            table.add_column(column)
        for worker in sorted(workers, key=lambda w: w.peer_id):
            props = worker.properties
            table.add_row(
                worker.peer_id,
                worker.status,
                str(props.get("gpu_model", "?")),
                str(props.get("gpu_memory_mb", "?")),
                str(props.get("job_id") or "-"),
                ", ".join(props.get("supported_job_types", [])),
            )
        Console().print(table)

    asyncio.run(main())
    return 0


def cmd_demo(settings: Settings) -> int:
    from fsm_worker.demo import run_demo

    workdir_setting = settings.get("workdir", None, optional(str))
    workdir = Path(workdir_setting) if workdir_setting else Path(tempfile.mkdtemp(prefix="fsm-demo-"))
    if settings.get("sleap", False, bool):
        from fsm_worker.demo import run_sleap_demo

        asyncio.run(run_sleap_demo(workdir, epochs=settings.get("epochs", 3, int)))
        return 0
    asyncio.run(
        run_demo(workdir, rows=settings.get("rows", 20_000, int), epochs=settings.get("epochs", 30, int))
    )
    return 0


def cmd_diagram(settings: Settings) -> int:
    out = settings.get("out", None, optional(str))
    return diagrams.main(["--out", out] if out else [])


COMMANDS: dict[str, Callable[[Settings], int]] = {
    "server": cmd_server,
    "worker": cmd_worker,
    "submit": cmd_submit,
    "status": cmd_status,
    "demo": cmd_demo,
    "diagram": cmd_diagram,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings(args, load_toml(args.settings_file, args.command))
        default_level = (
            "WARNING" if args.command == "demo" else "INFO"
        )  # the demo narrates; logs would clutter it
        logs.configure(settings.get("log_level", default_level), settings.get("json_logs", False, as_bool))
        return COMMANDS[args.command](settings)
    except SettingsError as error:
        print(f"fsm-worker {args.command}: {error}", file=sys.stderr)
        return 2
    except (
        JobClientError,
        SignalingError,
        ConnectionError,
        TransferError,
        RtcSetupError,
        ValueError,
    ) as error:
        print(f"fsm-worker {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
