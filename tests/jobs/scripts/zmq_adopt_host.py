"""A stand-in worker for a job with a ZMQ side channel: ``zmq_adopt_host.py WORKDIR EPOCHS STEPS DELAY``.

Starts one detached ``zmq-trainer`` job and prints each event as JSON ``{"kind", "progress", "metrics",
"offset"}`` with the runner's resume offset, then waits to be killed.
"""

import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))  # tests/: the shared support package

from support.zmq_jobs import zmq_registry

from fsm_worker.jobs.spec import JobSpec
from fsm_worker.protocol.worker.events import RunEvent, RunProgress
from fsm_worker.shells.runner.runner import JobRunner


async def main(workdir: Path, epochs: str, steps: str, delay: str) -> None:
    runner = JobRunner(zmq_registry(int(epochs), int(steps), float(delay)), progress_interval=0.0)

    def on_event(event: RunEvent) -> None:
        progress = event if isinstance(event, RunProgress) else None
        line = {"kind": type(event).__name__, "progress": progress.progress if progress else None,
                "metrics": dict(progress.metrics) if progress else None, "offset": runner.resume_offset("job")}  # fmt: skip
        print(json.dumps(line), flush=True)

    await runner.start(JobSpec("job", "zmq-trainer", {}, workdir), on_event)
    await asyncio.sleep(600)


asyncio.run(main(Path(sys.argv[1]), *sys.argv[2:5]))
