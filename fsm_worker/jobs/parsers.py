"""Output parsers for ``Command(progress=...)``: this project's JSON lines, and tqdm / Lightning progress bars.

The runner splits a job's stdout at ``\\n`` and ``\\r`` (tqdm redraws a bar with ``\\r``), removes ANSI escape
codes and hands each non-empty line to ``parse``; ``None`` means "plain output" (logged, kept in the tail).
"""

from __future__ import annotations

import math
import re
from typing import Protocol, runtime_checkable

import attrs

from fsm_worker.jobs.progress import ErrorLine, ProgressLine, ResultLine, parse_line

ParsedLine = ProgressLine | ResultLine | ErrorLine

ANSI_ESCAPE = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[@-Z\\-_])")

_NUMBER = r"[0-9]+(?:\.[0-9]+)?[kMGT]?"
TQDM_BAR = re.compile(
    rf"^(?:(?P<desc>.*?):\s*)?(?P<pct>[0-9]+)%\|[^|]*\|\s*(?P<n>{_NUMBER})/(?P<total>{_NUMBER}|\?)"
    r"\s*\[(?P<elapsed>[0-9:]+)<(?P<remaining>[0-9:?]+)(?P<tail>[^\]]*)\]"
)
EPOCH_DESC = re.compile(r"^Epoch\s+(?P<epoch>[0-9]+)")
POSTFIX_PAIR = re.compile(
    r"(?P<key>[A-Za-z_][\w/.\-]*)=(?P<value>[-+]?(?:[0-9]*\.)?[0-9]+(?:[eE][-+]?[0-9]+)?)"
)
_SUFFIX = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


@runtime_checkable
class OutputParser(Protocol):
    """Turns one line of a job's output into a progress-channel item, or ``None`` for plain output."""

    def parse(self, line: str) -> ParsedLine | None: ...


def clean_line(raw: str) -> str:
    """A line without ANSI escape codes and surrounding whitespace."""
    return ANSI_ESCAPE.sub("", raw).strip()


@attrs.frozen
class JsonLines:
    """This project's JSON lines (``docs/job-progress.md``); the default parser."""

    def parse(self, line: str) -> ParsedLine | None:
        return parse_line(line)


def _count(text: str) -> float:
    if text[-1] in _SUFFIX:
        return float(text[:-1]) * _SUFFIX[text[-1]]
    return float(text)


def _seconds(clock: str) -> float | None:
    if "?" in clock:
        return None
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


@attrs.frozen
class TqdmBar:
    """tqdm / PyTorch Lightning bars: ``Epoch 1:  40%|████  | 2/5 [00:01<00:02, 2.1it/s, loss=0.07]``.

    With ``epochs`` (the run's epoch count) progress covers the whole run, and epochs count from
    ``first_epoch`` (Lightning: 0); without it, progress is the bar's own fraction. ``key=value`` numbers
    in the postfix become metrics; bars whose description does not start with ``Epoch`` (validation, for
    instance) are ignored when ``epochs_only``.
    """

    epochs: int | None = None
    first_epoch: int = 0
    epochs_only: bool = True

    def parse(self, line: str) -> ProgressLine | None:
        match = TQDM_BAR.search(line)
        if match is None or match["total"] == "?":
            return None
        desc = (match["desc"] or "").strip()
        epoch_match = EPOCH_DESC.match(desc)
        if epoch_match is None and self.epochs_only and self.epochs is not None:
            return None
        total = _count(match["total"])
        fraction = min(_count(match["n"]) / total, 1.0) if total > 0 else 0.0
        metrics: dict[str, float | int] = {}
        for pair in POSTFIX_PAIR.finditer(match["tail"]):
            value = float(pair["value"])
            if math.isfinite(value) and pair["key"] != "v_num":
                metrics[pair["key"]] = value
        remaining = _seconds(match["remaining"])
        elapsed = _seconds(match["elapsed"]) or 0.0
        progress = fraction
        if epoch_match is not None:
            epoch = int(epoch_match["epoch"]) - self.first_epoch
            metrics["epoch"] = epoch + 1
            if self.epochs:
                progress = min((epoch + fraction) / self.epochs, 1.0)
                if remaining is not None:
                    remaining += max(self.epochs - epoch - 1, 0) * (elapsed + remaining)
        if remaining is not None:
            metrics["eta_seconds"] = remaining
        return ProgressLine(progress, desc[:200] or line[:200], metrics)


@attrs.frozen
class AnyOf:
    """The first of ``parsers`` that recognises a line."""

    parsers: tuple[OutputParser, ...]

    def parse(self, line: str) -> ParsedLine | None:
        for parser in self.parsers:
            parsed = parser.parse(line)
            if parsed is not None:
                return parsed
        return None


@attrs.define
class LineSplitter:
    """Cuts a byte stream into lines at ``\\n`` or ``\\r``; a line longer than ``limit`` bytes is dropped."""

    limit: int = 256 * 1024
    _buffer: bytearray = attrs.field(factory=bytearray, init=False)
    _skipping: bool = attrs.field(default=False, init=False)
    dropped: int = attrs.field(default=0, init=False)

    def feed(self, data: bytes) -> list[str]:
        lines: list[str] = []
        for piece in re.split(rb"(\r\n|\r|\n)", data):
            if piece in (b"\r\n", b"\r", b"\n"):
                if not self._skipping and self._buffer:
                    lines.append(self._buffer.decode("utf-8", "replace"))
                self._buffer.clear()
                self._skipping = False
                continue
            if self._skipping:
                continue
            self._buffer += piece
            if len(self._buffer) > self.limit:
                self._buffer.clear()
                self._skipping = True
                self.dropped += 1
        return lines

    def flush(self) -> list[str]:
        rest = [] if self._skipping or not self._buffer else [self._buffer.decode("utf-8", "replace")]
        self._buffer.clear()
        self._skipping = False
        return rest
