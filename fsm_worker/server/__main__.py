"""``python -m fsm_worker.server``: ``fsm-worker server`` under another name, for tests and benchmarks.

Same settings (flags, ``FSM_WORKER_*`` variables, ``--settings`` TOML); a token is required rather than
generated, and ``LISTENING <url>`` is printed on stdout once the port is bound.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from fsm_worker import logs
from fsm_worker.cli import add_settings_file, server_config
from fsm_worker.cli_options import LogOptions, add_command_arguments, command_settings
from fsm_worker.server.app import RunningServer, run_server
from fsm_worker.settings import Settings, SettingsError, load_toml


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of ``fsm-worker server``."""
    parser = argparse.ArgumentParser(
        prog="python -m fsm_worker.server", description="Run the signaling server."
    )
    add_settings_file(parser)
    add_command_arguments(parser, "server")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM."""
    args = parse_args(argv)
    try:
        settings = Settings(args, load_toml(args.settings_file, "server"))
        options = settings.build(LogOptions, command_settings("server", LogOptions))
        logs.configure(options.log_level or "INFO", options.json_logs)
        config = server_config(settings, generate_token=False)
    except SettingsError as error:
        print(f"python -m fsm_worker.server: {error}", file=sys.stderr)
        return 2

    def ready(running: RunningServer) -> None:
        print(f"LISTENING {running.url}", flush=True)

    asyncio.run(run_server(config, ready=ready))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
