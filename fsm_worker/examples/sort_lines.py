"""A third-party job type written with the kit: `sort-lines` sorts the uploaded .txt files with `sort`.

Offer it:  fsm-worker worker ... --job-types-from fsm_worker.examples.sort_lines:JOB_TYPES
(or as a plugin: `[project.entry-points."fsm_worker.job_types"] sort-lines = "fsm_worker.examples.sort_lines:SortLines"`).
"""

from __future__ import annotations

import attrs

from fsm_worker.jobs import Command, JobSpec, boolean
from fsm_worker.jobs.kit import SchemaJobType


@attrs.frozen
class SortConfig:
    reverse: bool = boolean(False, "largest first")
    numeric: bool = boolean(False, "compare as numbers")


class SortLines(SchemaJobType):
    """Every uploaded .txt, merged and sorted into outputs/sorted.txt."""

    schema = SortConfig
    input_suffixes = (".txt",)
    max_input_bytes = 100 * 1024**2
    minutes = 0.1

    def command(self, config: SortConfig, spec: JobSpec) -> Command:
        flags = ["-r"] * config.reverse + ["-n"] * config.numeric
        inputs = sorted(str(path) for path in spec.inputs_dir.glob("*.txt"))
        return Command(["sort", *flags, "-o", str(spec.outputs_dir / "sorted.txt"), "--", *inputs])


JOB_TYPES = {"sort-lines": SortLines()}
