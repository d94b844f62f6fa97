"""Embedding a worker in your own program, with a job type of your own: `word-count`.

Run a worker that offers it:  python -m fsm_worker.examples.word_count --server URL --token TOKEN

The handler validates the client's config and builds what runs (here an importable Python function, run in
its own process); the worker never runs a command a client sent.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fsm_worker.jobs.config import check_config_keys, get_int
from fsm_worker.jobs.registry import JobTypeRegistry, PythonCall, default_registry
from fsm_worker.jobs.report import report_progress, report_result
from fsm_worker.jobs.spec import JobSpec
from fsm_worker.worker import WorkerConfig, WorkerHost


def count_words(inputs: str, outputs: str, top: int) -> None:
    """The job itself (runs in the job's process): the `top` most common words over every input file."""
    files = sorted(Path(inputs).iterdir())
    counts: collections.Counter[str] = collections.Counter()
    for done, path in enumerate(files, start=1):
        counts.update(re.findall(r"[a-z']+", path.read_text(encoding="utf-8", errors="replace").lower()))
        report_progress(done / (len(files) + 1), f"counted {path.name}")
    Path(outputs, "top_words.json").write_text(json.dumps(counts.most_common(top)), encoding="utf-8")
    report_result("top_words.json", {"distinct_words": len(counts)})


class WordCount:
    """The `word-count` job type: config `{"top": int}` (1..1000, default 10)."""

    def validate_config(self, config: Mapping[str, Any]) -> None:
        check_config_keys(config, ("top",))
        get_int(config, "top", 10, 1, 1000)

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        return 0.1

    def build(self, spec: JobSpec) -> PythonCall:
        top = get_int(spec.config, "top", 10, 1, 1000)
        return PythonCall(
            count_words, {"inputs": str(spec.inputs_dir), "outputs": str(spec.outputs_dir), "top": top}
        )


def registry() -> JobTypeRegistry:
    """The built-in job types plus `word-count`."""
    types = default_registry()
    types.register("word-count", WordCount())
    return types


async def serve(server: str, token: str) -> None:
    host = WorkerHost(WorkerConfig(server, token), registry())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(host.shutdown()))
    await host.start()
    await host.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a worker offering word-count and train-demo")
    parser.add_argument("--server", required=True)
    parser.add_argument("--token", required=True)
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.server, arguments.token))
