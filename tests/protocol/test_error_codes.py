"""The docs list exactly the codes of each layer's enum (docs are the contract a third-party client reads)."""

from __future__ import annotations

import re
from pathlib import Path

from fsm_worker.jobs.spec import ErrorCode as RunnerCode
from fsm_worker.protocol.errors import AppErrorCode, FrameCode, SignalingCode

DOCS = Path(__file__).resolve().parents[2] / "docs"
CODE = re.compile(r"`([A-Z][A-Z_]{2,})`")


def _section(document: str, heading: str) -> str:
    text = (DOCS / document).read_text(encoding="utf-8")
    start = text.index(heading)
    level = heading.split(" ")[0]
    rest = text[start + len(heading) :]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def _codes_in_table_column(section: str, column: int) -> set[str]:
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("|")]
    return {code for cells in rows[2:] for code in CODE.findall(cells[column])}


def test_protocol_md_lists_exactly_the_app_error_codes() -> None:
    listed = _codes_in_table_column(_section("protocol.md", "## Error codes"), 1)
    assert listed == {str(code) for code in AppErrorCode}


def test_signaling_md_lists_exactly_the_signaling_codes() -> None:
    listed = _codes_in_table_column(_section("signaling.md", "## Error codes"), 0)
    assert listed == {str(code) for code in SignalingCode}


def test_transfer_md_lists_exactly_the_frame_codes() -> None:
    listed = set(CODE.findall(_section("transfer.md", "### Error codes").split("\n\n")[1]))
    assert listed == {str(code) for code in FrameCode}


def test_the_runners_failure_codes_are_app_error_codes() -> None:
    assert {str(code) for code in RunnerCode} <= {str(code) for code in AppErrorCode}
