"""``SchemaJobType``: the base that makes a job type a schema, accepted input kinds and one ``command``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from fsm_worker.jobs.launch import Launch
from fsm_worker.jobs.schema import describe_schema, parse_config
from fsm_worker.jobs.spec import JobInputError, JobSpec
from fsm_worker.protocol.messages import InputFile


class SchemaJobType:
    """Subclasses set ``schema`` (an attrs class of ``fsm_worker.jobs.schema`` fields) and write ``command``.

    ``input_suffixes`` (empty: any) and ``max_input_bytes`` are checked against the request's manifest before
    any byte moves; ``minutes`` is the estimate the worker bids with.
    """

    schema: ClassVar[type[Any]]
    input_suffixes: ClassVar[tuple[str, ...]] = ()
    max_input_bytes: ClassVar[int | None] = None
    minutes: ClassVar[float] = 1.0

    def validate_config(self, config: Mapping[str, Any]) -> None:
        parse_config(self.schema, config)

    def validate_inputs(self, manifest: Sequence[InputFile], config: Mapping[str, Any]) -> None:
        for item in manifest:
            if self.input_suffixes and not item.name.lower().endswith(self.input_suffixes):
                raise JobInputError(
                    item.name, f"not one of the accepted kinds ({', '.join(self.input_suffixes)})"
                )
            if self.max_input_bytes is not None and item.size > self.max_input_bytes:
                raise JobInputError(
                    item.name, f"{item.size} bytes is over the limit of {self.max_input_bytes}"
                )

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        return self.minutes

    def describe(self) -> dict[str, Any]:
        return {"config": describe_schema(self.schema), "inputs": list(self.input_suffixes)}

    def build(self, spec: JobSpec) -> Launch:
        return self.command(parse_config(self.schema, spec.config), spec)

    def command(self, config: Any, spec: JobSpec) -> Launch:
        """What to run for this validated ``config`` (cwd is ``spec.workdir``; write ``spec.outputs_dir``)."""
        raise NotImplementedError
