"""A worker host in its own process, with the tests' job types: prints READY once connected.

usage: worker_proc.py URL TOKEN PEER_ID WORKDIR PID_FILE (with tests/ on PYTHONPATH, for `rooms`);
`FSM_TEST_WORKER_JOURNAL=1` turns the journal on (docs/durability.md); `FSM_TEST_WORKER_GPUS=0,1` gives the
worker those (fake) GPUs, one slot each (issue 12), `FSM_TEST_WORKER_LIFETIME` sets
`job_lifetime`, `FSM_TEST_WORKER_LOG_MAX` `job_log_max_bytes`, `FSM_WORKER_TEST_KILL_AT` a crash point
(tests/support/kill_points.py). SIGTERM and SIGINT act as for `fsm-worker worker` (fsm_worker/worker/signals.py).
"""

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from rooms import job_types
from support.kill_points import kill_point_hooks

from fsm_worker.worker import WorkerConfig, WorkerHost
from fsm_worker.worker.signals import stop_on_signals


async def main(url: str, token: str, peer_id: str, workdir: str, pid_file: str) -> None:
    journal = os.environ.get("FSM_TEST_WORKER_JOURNAL") == "1"
    lifetime: Any = os.environ.get("FSM_TEST_WORKER_LIFETIME") or "detached"  # WorkerConfig validates it
    gpus = tuple(os.environ.get("FSM_TEST_WORKER_GPUS", "auto").split(","))
    log_max = os.environ.get("FSM_TEST_WORKER_LOG_MAX")
    logs: dict[str, Any] = {"job_log_max_bytes": int(log_max)} if log_max else {}
    config = WorkerConfig(
        url,
        token,
        peer_id,
        workdir=Path(workdir),
        gpu_memory_mb=8192,
        loopback_only=True,
        journal=journal,
        gpus=gpus,
        job_lifetime=lifetime,
        **logs,
    )
    host = WorkerHost(config, job_types(Path(pid_file)), hooks=kill_point_hooks())
    stopping = stop_on_signals(host)
    await host.start()
    print("READY", flush=True)
    await host.wait_closed()
    await asyncio.gather(*stopping)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
