"""The kit example (`fsm_worker/examples/sort_lines.py`) through a real runner and a real `sort`."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.jobs import Recorder, make_spec

from fsm_worker.jobs import (
    JobConfigError,
    JobInputError,
    JobRunner,
    JobTypeRegistry,
    RunSucceeded,
    add_job_types_from,
)
from fsm_worker.protocol.messages import InputFile


async def test_sort_lines_runs_and_validates(tmp_path: Path) -> None:
    registry = JobTypeRegistry()
    assert add_job_types_from(registry, "fsm_worker.examples.sort_lines:JOB_TYPES") == ["sort-lines"]
    assert registry.describe()["sort-lines"]["config"]["fields"]["numeric"]["type"] == "boolean"
    with pytest.raises(JobConfigError, match="allowed: numeric, reverse"):
        registry.validate("sort-lines", {"ascending": True})
    with pytest.raises(JobInputError) as refused:
        registry.validate("sort-lines", {}, [InputFile("a.txt", 3), InputFile("b.csv", 3)])
    assert refused.value.name == "b.csv"

    runner = JobRunner(registry)
    spec = make_spec(tmp_path, "sort-lines", {"numeric": True, "reverse": True})
    (spec.inputs_dir / "a.txt").write_text("3\n10\n")
    (spec.inputs_dir / "b.txt").write_text("2\n")
    rec = Recorder()
    await runner.start(spec, rec)
    end = await rec.terminal()
    assert isinstance(end, RunSucceeded) and end.output_files == ("sorted.txt",)
    assert (spec.outputs_dir / "sorted.txt").read_text() == "10\n3\n2\n"
