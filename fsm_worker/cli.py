"""`fsm-worker`: the command line over the server, the worker host and the client API.

Every setting is a field of a config class (see `cli_options`): a flag, an `FSM_WORKER_*` variable or a TOML
key (`--settings`), in that order; `docs/settings.md` lists them all.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fsm_worker import diagrams, logs
from fsm_worker.cli_jobs import cmd_attach, cmd_cancel, cmd_submit
from fsm_worker.cli_options import (
    COMMAND_GROUPS,
    ConnectionOptions,
    DemoOptions,
    DiagramOptions,
    DoctorOptions,
    IceOptions,
    LogOptions,
    WorkerOptions,
    add_command_arguments,
    command_settings,
)
from fsm_worker.client import ClientTimeouts, JobClient, JobClientError, WorkerInfo
from fsm_worker.jobs.registry import JobTypeRegistry
from fsm_worker.server.app import RunningServer, run_server
from fsm_worker.server.config import ServerConfig
from fsm_worker.settings import Settings, SettingsError, load_toml
from fsm_worker.shells.rtc.session import RtcSetupError
from fsm_worker.shells.signaling import SignalingError
from fsm_worker.shells.transfer.errors import TransferError
from fsm_worker.worker import WorkerConfig, WorkerHost
from fsm_worker.worker.signals import stop_on_signals

log = logging.getLogger("fsm_worker.cli")

EXAMPLES = {
    "server": "fsm-worker server --port 8765 --token s3cret\n  fsm-worker server --token A --token B --redis redis://127.0.0.1:6379/0",
    "worker": "fsm-worker worker --server http://127.0.0.1:8765 --token s3cret --gpu-memory-mb 8192",
    "submit": "fsm-worker submit --server http://127.0.0.1:8765 --token s3cret --job-type train-demo \\\n"
    "      --input data.csv --config epochs=20 --config learning_rate=0.05 --out results/",
    "attach": "fsm-worker attach --token s3cret --job-id JOB_ID --out results/",
    "cancel": "fsm-worker cancel --token s3cret --job-id JOB_ID",
    "status": "fsm-worker status --server http://127.0.0.1:8765 --token s3cret",
    "demo": "fsm-worker demo",
    "diagram": "fsm-worker diagram --out diagrams/",
    "doctor": "fsm-worker doctor --workdir ~/.cache/fsm-worker",
}

HELP = {
    "server": "Run the signaling server.",
    "worker": "Run a worker host.",
    "submit": "Submit a job and follow it to its results.",
    "attach": "Follow a job submitted by another fsm-worker process, and download its results.",
    "cancel": "Cancel a job submitted by another fsm-worker process.",
    "status": "Show the workers in a room.",
    "demo": "Run server, worker and client on loopback with a real training job.",
    "diagram": "Regenerate the state diagrams from the transition table.",
    "doctor": "Check the worker's journal (opens, integrity, format) and work directory (writable, free space).",
}


def add_settings_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings",
        dest="settings_file",
        metavar="FILE",
        help="TOML settings file (also FSM_WORKER_SETTINGS)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsm-worker",
        description="A remote job worker: signaling server, worker host and client. "
        "Settings come from flags, FSM_WORKER_* variables, or a TOML file (--settings), in that order.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_GROUPS:
        sub = commands.add_parser(
            name,
            help=HELP[name],
            description=HELP[name],
            epilog=f"example:\n  {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_settings_file(sub)
        add_command_arguments(sub, name)
    return parser


# --- commands -------------------------------------------------------------------------------------------------


def server_config(settings: Settings, generate_token: bool) -> ServerConfig:
    """The server's config from its settings; without a token, one is generated (and printed) if allowed."""
    fixed = {}
    if settings.lookup("token") is None:
        if not generate_token:
            raise SettingsError("--token is required (or FSM_WORKER_TOKEN, or token in the settings file)")
        fixed["tokens"] = [secrets.token_hex(16)]
        print(f"generated token: {fixed['tokens'][0]}", flush=True)
    return settings.build(ServerConfig, command_settings("server", ServerConfig), **fixed)


def cmd_server(settings: Settings) -> int:
    config = server_config(settings, generate_token=True)

    def ready(running: RunningServer) -> None:
        print(
            f"signaling server listening on {running.url} ({len(config.tokens)} room(s)"
            f"{', redis ' + config.redis_url if config.redis_url else ''})",
            flush=True,
        )

    asyncio.run(run_server(config, ready=ready))
    return 0


def worker_config(settings: Settings) -> WorkerConfig:
    ice = settings.build(IceOptions, command_settings("worker", IceOptions))
    return settings.build(WorkerConfig, command_settings("worker", WorkerConfig), ice_servers=ice.servers())


def load_registry(spec: str) -> JobTypeRegistry:
    """`MODULE:OBJECT` → a `JobTypeRegistry` (the object, or what calling it returns)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise SettingsError(f"--job-types-from {spec!r}: expected MODULE:OBJECT")
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise SettingsError(f"--job-types-from {spec}: {error}") from None
    if not isinstance(found, JobTypeRegistry) and callable(found):
        found = found()
    if not isinstance(found, JobTypeRegistry):
        raise SettingsError(
            f"--job-types-from {spec}: a {type(found).__name__}, not a JobTypeRegistry "
            "(or a callable returning one)"
        )
    return found


def cmd_worker(settings: Settings) -> int:
    config = worker_config(settings)
    options = settings.build(WorkerOptions, command_settings("worker", WorkerOptions))
    registry = load_registry(options.job_types_from) if options.job_types_from else None

    async def main() -> None:
        host = WorkerHost(config, registry)
        # SIGTERM: leave detached jobs running for a restart; SIGINT: a graceful stop (fsm_worker/worker/signals.py)
        stopping = stop_on_signals(host)  # noqa: F841  (keeps the stop tasks alive)
        await host.start(connect_timeout=config.connect_timeout)
        print(
            f"worker {host.peer_id} connected to {config.server_url} "
            f"({host.capabilities.gpu_model}, {host.capabilities.gpu_memory_mb} MB)",
            flush=True,
        )
        await host.wait_closed()

    asyncio.run(main())
    return 0


def cmd_status(settings: Settings) -> int:
    connection = settings.build(ConnectionOptions, command_settings("status", ConnectionOptions))
    timeouts = settings.build(ClientTimeouts, command_settings("status", ClientTimeouts))

    async def main() -> None:
        async with JobClient(connection.server, connection.token, timeouts=timeouts) as client:
            workers = await client.discover_workers()
        Console().print(status_table(workers))

    asyncio.run(main())
    return 0


def status_table(workers: Sequence[WorkerInfo]) -> Table:
    """One row per worker: status, GPU model and indices, free/total slots, running and queued jobs."""
    running = sum(worker.running for worker in workers)
    queued = sum(worker.queue_length for worker in workers)
    table = Table(title=f"{len(workers)} worker(s), {running} job(s) running, {queued} queued")
    columns = (
        "worker",
        "status",
        "GPU",
        "GPUs",
        "slots free",
        "running",
        "queued",
        "memory (MB)",
        "job types",
    )
    for column in columns:
        table.add_column(column)
    for worker in sorted(workers, key=lambda w: w.peer_id):
        props = worker.properties
        queue = f"{worker.queue_length}/{worker.queue_size}" if worker.queue_size else "-"
        table.add_row(
            worker.peer_id,
            worker.status,
            ", ".join(worker.gpu_models) or str(props.get("gpu_model", "?")),
            ",".join(map(str, worker.gpus)) or "-",
            f"{worker.free_slots}/{worker.slots}",
            str(worker.running),
            queue,
            str(props.get("gpu_memory_mb", "?")),
            ", ".join(props.get("supported_job_types", [])),
        )
    return table


def cmd_demo(settings: Settings) -> int:
    from fsm_worker.demo import run_demo

    options = settings.build(DemoOptions, command_settings("demo", DemoOptions))
    workdir = (options.workdir or Path(tempfile.mkdtemp(prefix="fsm-demo-"))).absolute()
    if options.sleap:
        from fsm_worker.demo import run_sleap_demo

        asyncio.run(run_sleap_demo(workdir, epochs=3 if options.epochs == 30 else options.epochs))
        return 0
    asyncio.run(run_demo(workdir, rows=options.rows, epochs=options.epochs))
    return 0


def cmd_diagram(settings: Settings) -> int:
    out = settings.build(DiagramOptions, command_settings("diagram", DiagramOptions)).out
    return diagrams.main(["--out", str(out)] if out else [])


def cmd_doctor(settings: Settings) -> int:
    from fsm_worker.worker.doctor import diagnose

    options = settings.build(DoctorOptions, command_settings("doctor", DoctorOptions))
    fine, problems = diagnose(options.workdir.expanduser().absolute(), options.min_free_mb)
    for line in fine:
        print(f"ok: {line}")
    for line in problems:
        print(f"PROBLEM: {line}")
    return 1 if problems else 0


COMMANDS: dict[str, Callable[[Settings], int]] = {
    "server": cmd_server,
    "worker": cmd_worker,
    "submit": cmd_submit,
    "attach": cmd_attach,
    "cancel": cmd_cancel,
    "status": cmd_status,
    "demo": cmd_demo,
    "diagram": cmd_diagram,
    "doctor": cmd_doctor,
}


def main(argv: Sequence[str] | None = None) -> int:
    # A process started in the background of a non-interactive shell inherits SIGINT ignored: obey it again.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    args = _parser().parse_args(argv)
    try:
        settings = Settings(args, load_toml(args.settings_file, args.command))
        options = settings.build(LogOptions, command_settings(args.command, LogOptions))
        default_level = (
            "WARNING" if args.command == "demo" else "INFO"
        )  # the demo narrates; logs would clutter it
        logs.configure(options.log_level or default_level, options.json_logs)
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
