"""Subprocess entry for ``PythonCall``: ``python -u -m fsm_worker.jobs.pycall TARGET KWARGS_JSON``."""

from __future__ import annotations

import json
import sys

from fsm_worker.jobs.launch import resolve_target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m fsm_worker.jobs.pycall MODULE:FUNCTION KWARGS_JSON", file=sys.stderr)
        return 2
    kwargs = json.loads(args[1])
    resolve_target(args[0])(**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
