"""A stand-in worker process: runs one long job that dies with it (``job_lifetime="with_worker"``), prints its
pid, then waits to be killed."""

import asyncio
import sys
from pathlib import Path

from fsm_worker.jobs.registry import JobTypeRegistry, StaticCommandHandler
from fsm_worker.jobs.spec import JobSpec
from fsm_worker.protocol.worker.events import RunStarted
from fsm_worker.shells.runner.runner import JobRunner


async def main(workdir: Path) -> None:
    registry = JobTypeRegistry()
    registry.register("sleep", StaticCommandHandler((sys.executable, "-c", "import time; time.sleep(600)")))

    def on_event(event: object) -> None:
        if isinstance(event, RunStarted):
            print(event.pid, flush=True)

    await JobRunner(registry, job_lifetime="with_worker").start(
        JobSpec("job", "sleep", {}, workdir), on_event
    )
    await asyncio.sleep(600)


asyncio.run(main(Path(sys.argv[1])))
