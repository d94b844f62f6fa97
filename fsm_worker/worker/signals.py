"""How a worker process answers stop signals (the CLI's `fsm-worker worker`, and the tests' worker processes).

- SIGTERM (systemd's stop and restart, an upgrade): `WorkerHost.detach()` when the host can (detached jobs and
  a journal): jobs keep running, the journal is kept, a worker started again takes them back. Otherwise, and
  under `job_lifetime = "with_worker"`, a graceful `shutdown()` as for SIGINT.
- SIGINT (Ctrl+C): `shutdown()`: no new jobs, the running one finishes (or is cancelled, per
  `shutdown_policy`); a second SIGINT stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from fsm_worker.worker.host import WorkerHost

__all__ = ["stop_on_signals"]


def stop_on_signals(host: WorkerHost) -> list[asyncio.Task[None]]:
    """Install SIGTERM/SIGINT handlers on the running loop; returns the list the stop tasks are kept in."""
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_term() -> None:
        stopping.append(loop.create_task(host.detach()))

    def on_int() -> None:
        stopping.append(loop.create_task(host.shutdown()))

    for sig, handler in ((signal.SIGTERM, on_term), (signal.SIGINT, on_int)):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)
    return stopping
