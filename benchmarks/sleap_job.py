"""A tiny sleap-train job through server + worker + client, next to the same training run directly (ABBA).

Run (needs the sleap extra): ``.venv/bin/python benchmarks/sleap_job.py [--rounds 1]``. Each round runs
direct, ours, ours, direct. "direct" is sleap-nn's own ``train`` CLI on the same generated config, started as a
plain subprocess (what a user would run by hand); "ours" is request → result through the protocol. Prints the
phases of ours, the medians and the ratio of ours' wall time to direct.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fsm_worker.client import JobClient
from fsm_worker.demo import TINY_SLEAP
from fsm_worker.jobs import JobSpec
from fsm_worker.jobs.sleap import SleapTrainHandler, sleap_available
from fsm_worker.jobs.sleap.synthetic import make_labels
from fsm_worker.protocol.messages import JobStatus
from fsm_worker.server.app import start_server
from fsm_worker.server.config import ServerConfig
from fsm_worker.worker import WorkerConfig, WorkerHost

CONFIG = {**TINY_SLEAP, "max_epochs": 2}


def direct(labels: Path, workdir: Path) -> float:
    """Wall seconds of the same training run as a plain subprocess (no ZMQ ports, no worker)."""
    spec = JobSpec("direct", "sleap-train", CONFIG, workdir)
    spec.inputs_dir.mkdir(parents=True)
    (spec.inputs_dir / labels.name).write_bytes(labels.read_bytes())
    argv = [a for a in SleapTrainHandler().build(spec).argv if "zmq." not in a]
    began = time.perf_counter()
    subprocess.run(argv, cwd=workdir, check=True, capture_output=True)
    return time.perf_counter() - began


async def ours(labels: Path, workdir: Path) -> dict[str, float]:
    token = secrets.token_hex(16)
    server = await start_server(ServerConfig(tokens=[token], host="127.0.0.1", port=0))
    host = WorkerHost(
        WorkerConfig(server.url, token, "bench-worker", workdir=workdir / "w", loopback_only=True)
    )
    await host.start()
    try:
        async with JobClient(server.url, token, "bench-client", loopback_only=True) as client:
            began = time.perf_counter()
            job = await client.submit("sleap-train", CONFIG, [labels])
            first_metric = None
            async for event in job.events():
                if first_metric is None and isinstance(event, JobStatus) and "epoch" in event.message:
                    first_metric = time.perf_counter() - began
            outcome = await job.result(workdir / "out")
            wall = time.perf_counter() - began
    finally:
        await host.shutdown()
        await server.stop()
    return {"request → first metric": first_metric or float("nan"), "training (worker)":
            outcome.training_duration_minutes * 60, "download": outcome.phases.get("download", 0.0),
            "wall": wall}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if not sleap_available():
        print("needs the sleap extra: pip install 'fsm-worker[sleap]'", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-sleap-"))
    labels = make_labels(tmp / "tiny.pkg.slp")
    direct_walls: list[float] = []
    runs: list[dict[str, float]] = []
    for round_ in range(args.rounds):
        for step, kind in enumerate(("direct", "ours", "ours", "direct")):
            workdir = tmp / f"{round_}-{step}-{kind}"
            if kind == "direct":
                direct_walls.append(direct(labels, workdir))
            else:
                runs.append(asyncio.run(ours(labels, workdir)))
    print(f"{'figure':32} {'median s':>9}   runs")
    for name in runs[0]:
        values = [run[name] for run in runs]
        print(
            f"{'ours: ' + name:32} {statistics.median(values):9.2f}   {', '.join(f'{v:.2f}' for v in values)}"
        )
    print(f"{'direct: sleap-nn train':32} {statistics.median(direct_walls):9.2f}   "
          f"{', '.join(f'{v:.2f}' for v in direct_walls)}")  # fmt: skip
    ratio = statistics.median(r["wall"] for r in runs) / statistics.median(direct_walls)
    print(f"ratio ours wall / direct wall: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
