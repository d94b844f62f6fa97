"""Per-run output handling for the runner: stdout cut into lines and parsed, bounded tails for failures."""

from __future__ import annotations

import collections
import logging

import attrs

from fsm_worker.jobs.parsers import JsonLines, LineSplitter, OutputParser, ParsedLine, clean_line

log = logging.getLogger(__name__)

LINE_LIMIT = 256 * 1024


@attrs.define
class OutputState:
    """Cuts stdout into lines (at ``\\n`` and ``\\r``), parses them, keeps the last plain lines and stderr."""

    job_id: str
    parser: OutputParser = attrs.field(factory=JsonLines)
    tail_chars: int = 2000
    splitter: LineSplitter = attrs.field(factory=lambda: LineSplitter(LINE_LIMIT))
    stdout_tail: collections.deque[str] = attrs.field(factory=lambda: collections.deque(maxlen=40))
    stderr_tail: bytearray = attrs.field(factory=bytearray)

    def stdout(self, data: bytes) -> list[ParsedLine]:
        """Parsed items of the complete lines in ``data`` (``b""`` at EOF flushes the last line)."""
        dropped = self.splitter.dropped
        lines = self.splitter.feed(data) if data else self.splitter.flush()
        if self.splitter.dropped > dropped:
            log.warning("job %s: stdout line longer than %d bytes skipped", self.job_id, LINE_LIMIT)
        parsed: list[ParsedLine] = []
        for raw in lines:
            line = clean_line(raw)
            if not line:
                continue
            item = self.parser.parse(line)
            if item is None:
                log.info("job %s: %s", self.job_id, line)
                self.stdout_tail.append(line[: self.tail_chars])
            else:
                parsed.append(item)
        return parsed

    def stderr(self, chunk: bytes) -> None:
        log.debug("job %s stderr: %s", self.job_id, chunk.decode("utf-8", "replace").rstrip())
        self.stderr_tail += chunk
        del self.stderr_tail[: -self.tail_chars * 4]  # utf-8 worst case

    def tail(self) -> str:
        """``stderr tail:`` (and ``output tail:`` of plain stdout lines) for a failure message."""
        parts = []
        if self.stdout_tail:
            text = "\n".join(self.stdout_tail)[-self.tail_chars // 2 :]
            parts.append(f"\noutput tail:\n{text}")
        if self.stderr_tail:
            text = self.stderr_tail.decode("utf-8", "replace").strip()[-self.tail_chars :]
            parts.append(f"\nstderr tail:\n{text}")
        return "".join(parts)
