"""``python -m fsm_worker.server``: run one signaling server node (used by tests and benchmarks).

Prints ``LISTENING <url>`` on stdout once the port is bound. The project CLI (``fsm-worker server``) is
the user-facing entry point; this module is the minimal one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from fsm_worker.logfmt import configure_logging
from fsm_worker.server.config import ServerConfig
from fsm_worker.server.server import RunningServer, run_server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m fsm_worker.server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", action="append", required=True, help="repeat for several rooms")
    parser.add_argument("--redis", default=None, help="redis://HOST:PORT/DB for scale-out")
    parser.add_argument("--grace", type=float, default=30.0, help="resume grace period in seconds")
    parser.add_argument("--node-ttl", type=float, default=10.0, help="seconds before a silent node is dead")
    parser.add_argument("--node-id", default=None)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    args = parse_args(argv)
    configure_logging(getattr(logging, str(args.log_level).upper(), logging.INFO))
    extra = {"node_id": args.node_id} if args.node_id else {}
    config = ServerConfig(
        tokens=args.token,
        host=args.host,
        port=args.port,
        redis_url=args.redis,
        resume_grace_seconds=args.grace,
        node_ttl_seconds=args.node_ttl,
        **extra,
    )

    def ready(running: RunningServer) -> None:
        print(f"LISTENING {running.url}", flush=True)

    asyncio.run(run_server(config, ready=ready))


if __name__ == "__main__":
    main()
