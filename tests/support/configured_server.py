"""A real server node in its own process, configured from any :class:`ServerConfig` fields.

``python tests/support/configured_server.py '{"tokens": [...], "port": 0, ...}'`` prints ``LISTENING <url>``
like ``python -m fsm_worker.server``, so tests can set limits that the command line does not offer (yet).
:func:`start_configured_server` starts one and returns a :class:`support.signaling.ServerProcess`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from support.signaling import ServerProcess

_ROOT = Path(__file__).resolve().parents[2]


async def start_configured_server(
    tokens: list[str],
    *,
    log_level: str = "WARNING",
    log_file: Path | None = None,
    timeout: float = 20.0,
    **fields: Any,
) -> ServerProcess:
    """Start a node with ``ServerConfig(tokens=tokens, host="127.0.0.1", port=0, **fields)``.

    Its log (stderr) goes to ``log_file`` when given (appended), else to this process's stderr.
    """
    from support.signaling import ServerProcess

    options = {"tokens": tokens, "host": "127.0.0.1", "port": 0, **fields}
    cmd = [sys.executable, str(Path(__file__).resolve()), json.dumps(options), log_level]
    env = {**os.environ, "PYTHONPATH": str(_ROOT)}
    stderr = open(log_file, "ab") if log_file is not None else None  # noqa: SIM115 (the child keeps it)
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env
        )
    finally:
        if stderr is not None:
            stderr.close()
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"server process exited before listening (rc={await proc.wait()})")
                if line.startswith("LISTENING "):
                    return ServerProcess(proc, line.split()[1])
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise


def main() -> None:
    """Run one node until SIGTERM."""
    from fsm_worker.logfmt import configure_logging
    from fsm_worker.server.app import RunningServer, run_server
    from fsm_worker.server.config import ServerConfig

    options = json.loads(sys.argv[1])
    configure_logging(getattr(logging, sys.argv[2] if len(sys.argv) > 2 else "WARNING"))

    def ready(running: RunningServer) -> None:
        print(f"LISTENING {running.url}", flush=True)

    asyncio.run(run_server(ServerConfig(**options), ready=ready))


if __name__ == "__main__":
    main()
