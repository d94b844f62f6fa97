"""A stand-in worker: starts one detached job, prints every event with the runner's resume offset, waits.

Usage: ``adopt_host.py WORKDIR COUNT DELAY CODE [PAD LOG_MAX_BYTES]``; each stdout line is JSON ``{"kind",
"progress", "offset"}``. PAD: filler bytes the counter prints per step; LOG_MAX_BYTES: the runner's log bound.
"""

import asyncio
import json
import sys
from pathlib import Path

from fsm_worker.jobs.registry import JobTypeRegistry, StaticCommandHandler
from fsm_worker.jobs.spec import JobSpec
from fsm_worker.protocol.worker.events import RunEvent, RunProgress
from fsm_worker.shells.runner.runner import JobRunner


async def main(workdir: Path, count: str, delay: str, code: str, pad: str = "0", log_max: str = "") -> None:
    registry = JobTypeRegistry()
    counter = str(Path(__file__).parent / "counter.py")
    argv = (sys.executable, "-u", counter, count, delay, code, pad)
    registry.register("counter", StaticCommandHandler(argv))
    runner = (
        JobRunner(registry, progress_interval=0.0, log_max_bytes=int(log_max))
        if log_max
        else JobRunner(registry, progress_interval=0.0)
    )

    def on_event(event: RunEvent) -> None:
        progress = event.progress if isinstance(event, RunProgress) else None
        line = {"kind": type(event).__name__, "progress": progress, "offset": runner.resume_offset("job")}
        print(json.dumps(line), flush=True)

    await runner.start(JobSpec("job", "counter", {}, workdir), on_event)
    await asyncio.sleep(600)


asyncio.run(main(Path(sys.argv[1]), *sys.argv[2:7]))
