"""A worker host with slots (issue 12) in its own process: prints READY once connected.

usage: slots_worker.py URL TOKEN PEER_ID WORKDIR LOG (with tests/ on PYTHONPATH). `FSM_TEST_SLOTS` holds a JSON
object of `WorkerConfig` overrides (`gpus`, `slots`, `queue_size`, `queue_lease`, `max_jobs_per_client`, ...).
Job types: `slot-job` (0.3 s, records its CUDA_VISIBLE_DEVICES and times in LOG, see slot_job.py),
`slot-long` (120 s, the same records), `slot-quick` (`FSM_TEST_SLOT_SECONDS`, default 1 s; for benchmarks).
"""

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from fsm_worker.jobs.config import check_config_keys
from fsm_worker.jobs.registry import Command, JobTypeRegistry, Launch
from fsm_worker.jobs.spec import JobSpec
from fsm_worker.worker import WorkerConfig, WorkerHost

SCRIPT = Path(__file__).with_name("slot_job.py")


@attrs.frozen
class SlotJob:
    """Runs slot_job.py for `seconds`, with the job id (so a test can tie each record to its job)."""

    seconds: float
    log: str

    def validate_config(self, config: Mapping[str, Any]) -> None:
        check_config_keys(config, ())

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        return self.seconds / 60.0

    def build(self, spec: JobSpec) -> Launch:
        return Command((sys.executable, "-u", str(SCRIPT), str(self.seconds), self.log, spec.job_id))


def registry(log: str) -> JobTypeRegistry:
    types = JobTypeRegistry()
    types.register("slot-job", SlotJob(0.3, log))
    types.register("slot-long", SlotJob(120.0, log))
    types.register("slot-quick", SlotJob(float(os.environ.get("FSM_TEST_SLOT_SECONDS", "1.0")), log))
    return types


async def main(url: str, token: str, peer_id: str, workdir: str, log: str) -> None:
    overrides = json.loads(os.environ.get("FSM_TEST_SLOTS", "{}"))
    config = WorkerConfig(
        url, token, peer_id, workdir=Path(workdir), loopback_only=True, journal=False, **overrides
    )
    host = WorkerHost(config, registry(log))
    await host.start()
    print("READY", flush=True)
    await host.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
