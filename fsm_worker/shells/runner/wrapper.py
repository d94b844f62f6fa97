"""Run a detached job and record it: ``python -m fsm_worker.shells.runner.wrapper RUN_DIR -- ARGV...``.

The runner starts a detached job through this wrapper in a new session, with stdout/stderr already
redirected to files in ``RUN_DIR``. The wrapper starts the job's command as its child (same process group),
writes ``record.json`` (its own pid and start time, the child's, the group), waits for the child and writes
``exit.json`` (the child's return code, negative for a signal) atomically. It ignores SIGTERM/SIGINT/SIGHUP
so that a stop of the whole group still leaves it to record how the job ended; SIGKILL leaves no
``exit.json`` and the job counts as lost.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from fsm_worker.shells.runner.detached import RunFiles, RunRecord, write_exit


def _ignore(signum: int, frame: object) -> None:
    """A handler (not ``SIG_IGN``) so that the child's ``exec`` resets it to the default."""


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(
            "usage: python -m fsm_worker.shells.runner.wrapper RUN_DIR -- COMMAND [ARGS...]", file=sys.stderr
        )
        return 2
    files, command = RunFiles(Path(argv[0])), argv[2:]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore)
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    except OSError as exc:
        print(f"cannot start {command[0]!r}: {exc}", file=sys.stderr)
        write_exit(files, 127)
        return 127
    RunRecord.for_processes(child.pid).write(files)
    while True:
        try:
            returncode = child.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
    write_exit(files, returncode)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
