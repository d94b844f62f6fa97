"""A job's input limits and the running totals they are checked against (pure, no disk).

``InputTally`` holds what the job's directory holds: finished inputs (name → size) and partial uploads
(sha256 → bytes so far), with running byte totals, so a ``put`` is checked without summing or scanning.
"""

from __future__ import annotations

import attrs

from fsm_worker.protocol.transfer.errors import FrameCode, FrameError
from fsm_worker.protocol.transfer.frames import Put

DEFAULT_MAX_INPUT_FILES = 1000


@attrs.frozen
class UploadLimits:
    """Per-job input limits; each refusal names the limit it hit."""

    max_upload_bytes: int = attrs.field(validator=attrs.validators.ge(0))
    max_files: int = attrs.field(default=DEFAULT_MAX_INPUT_FILES, validator=attrs.validators.ge(1))


class InputTally:
    """A job's inputs and partial uploads with their running byte totals."""

    def __init__(self, inputs: dict[str, int] | None = None, partials: dict[str, int] | None = None) -> None:
        self.inputs: dict[str, int] = dict(inputs or {})
        self.partials: dict[str, int] = dict(partials or {})
        self.input_bytes = sum(self.inputs.values())  # running totals: a put never sums or scans
        self.partial_bytes = sum(self.partials.values())

    def set_input(self, name: str, size: int) -> None:
        self.input_bytes += size - self.inputs.get(name, 0)
        self.inputs[name] = size

    def set_partial(self, sha256: str, size: int | None) -> None:
        """Record a partial upload's bytes so far (``None``: it is gone)."""
        self.partial_bytes -= self.partials.pop(sha256, 0)
        if size is not None:
            self.partials[sha256] = size
            self.partial_bytes += size

    def clear_partials(self) -> None:
        self.partials.clear()
        self.partial_bytes = 0

    def refusal(self, put: Put, limits: UploadLimits) -> FrameError | None:
        """The refusal of ``put`` by the job's file-count or byte limit, if any."""
        if put.name not in self.inputs and len(self.inputs) >= limits.max_files:
            return FrameError(
                f"{put.name!r}: the job already has {len(self.inputs)} input files "
                f"(max_input_files = {limits.max_files})",
                FrameCode.TOO_MANY_FILES,
            )
        used = self.input_bytes - self.inputs.get(put.name, 0)
        used += self.partial_bytes - self.partials.get(put.sha256, 0)
        if used + put.size > limits.max_upload_bytes:
            return FrameError(
                f"{put.name!r} ({put.size} bytes) exceeds the job upload limit "
                f"({used} of {limits.max_upload_bytes} bytes used; max_upload_bytes)",
                FrameCode.TOO_LARGE,
            )
        return None

    def validate(self) -> None:
        """Invariants: sizes are never negative and the running totals match."""
        assert all(size >= 0 for size in self.inputs.values())
        assert all(size >= 0 for size in self.partials.values())
        assert self.input_bytes == sum(self.inputs.values())
        assert self.partial_bytes == sum(self.partials.values())
