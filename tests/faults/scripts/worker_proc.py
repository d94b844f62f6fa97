"""A worker host in its own process, with the fault tests' job types: prints READY once connected.

usage: worker_proc.py URL TOKEN PEER_ID WORKDIR PID_FILE
"""

import asyncio
import sys
from pathlib import Path

from fsm_worker.host import WorkerConfig, WorkerHost
from fsm_worker.jobs.registry import JobTypeRegistry, StaticCommandHandler

TICKER = Path(__file__).with_name("ticker.py")


async def main(url: str, token: str, peer_id: str, workdir: str, pid_file: str) -> None:
    types = JobTypeRegistry()
    python = (sys.executable, "-u", str(TICKER))
    types.register("ticker", StaticCommandHandler((*python, "12", "0.25", pid_file)))
    types.register("long-ticker", StaticCommandHandler((*python, "240", "0.25", pid_file)))
    config = WorkerConfig(url, token, peer_id, workdir=Path(workdir), gpu_memory_mb=8192, loopback_only=True)
    host = WorkerHost(config, types)
    await host.start()
    print("READY", flush=True)
    await host.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
