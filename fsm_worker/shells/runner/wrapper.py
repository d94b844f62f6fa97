"""Run a detached job and record it: ``python -m fsm_worker.shells.runner.wrapper RUN_DIR [--log-max-bytes N]
-- ARGV...``.

The runner starts a detached job through this wrapper in a new session. The wrapper starts the job's command
as its child (same process group), writes ``record.json`` (its own pid and start time, the child's, the group),
copies the child's stdout and stderr into ``RUN_DIR/stdout.log`` and ``stderr.log`` (bounded, each rotated to
one ``.1`` file at ``--log-max-bytes``: ``joblog.py``), waits for the child and writes ``exit.json`` (the
child's return code, negative for a signal) atomically once its output is written. It ignores
SIGTERM/SIGINT/SIGHUP so that a stop of the whole group still leaves it to record how the job ended; SIGKILL
leaves no ``exit.json`` and the job counts as lost (the job's next write to its closed pipe ends it too).
The wrapper's own messages go to its stderr (the runner points it at ``RUN_DIR/wrapper.log``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from fsm_worker.shells.runner.detached import RunFiles, RunRecord, write_exit
from fsm_worker.shells.runner.joblog import BoundedLog

READ_CHUNK = 65536
#: After the job's main process ended, how long its output may still arrive (a descendant holding the pipe).
DRAIN_SECONDS = 2.0
USAGE = "usage: python -m fsm_worker.shells.runner.wrapper RUN_DIR [--log-max-bytes N] -- COMMAND [ARGS...]"


def _ignore(signum: int, frame: object) -> None:
    """A handler (not ``SIG_IGN``) so that the child's ``exec`` resets it to the default."""


def _pump(fd: int, sink: BoundedLog) -> None:
    """Copy the pipe ``fd`` into ``sink`` until EOF (a full disk drops output, never blocks the job)."""
    try:
        while data := os.read(fd, READ_CHUNK):
            try:
                sink.write(data)
            except OSError as exc:
                print(f"cannot write {sink.path}: {exc}", file=sys.stderr, flush=True)
    finally:
        os.close(fd)
        sink.close()


def _arguments(argv: list[str]) -> tuple[Path, int | None, list[str]] | None:
    if "--" not in argv:
        return None
    split = argv.index("--")
    head, command = argv[:split], argv[split + 1 :]
    if not command or len(head) not in (1, 3) or (len(head) == 3 and head[1] != "--log-max-bytes"):
        return None
    try:
        limit = int(head[2]) if len(head) == 3 else None
    except ValueError:
        return None
    return Path(head[0]), limit, command


def main(argv: list[str]) -> int:
    parsed = _arguments(argv)
    if parsed is None:
        print(USAGE, file=sys.stderr)
        return 2
    directory, limit, command = parsed
    files = RunFiles(directory)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore)
    try:
        logs = BoundedLog.append(files.stdout, limit), BoundedLog.append(files.stderr, limit)
    except (OSError, ValueError) as exc:
        print(f"cannot open the job's logs in {directory}: {exc}", file=sys.stderr)
        write_exit(files, 127)
        return 127
    try:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)  # fmt: skip
    except OSError as exc:
        logs[1].write(f"cannot start {command[0]!r}: {exc}\n".encode())
        write_exit(files, 127)
        return 127
    assert child.stdout is not None and child.stderr is not None
    pumps = [threading.Thread(target=_pump, args=(os.dup(stream.fileno()), sink), daemon=True)
             for stream, sink in ((child.stdout, logs[0]), (child.stderr, logs[1]))]  # fmt: skip
    child.stdout.close()
    child.stderr.close()
    for pump in pumps:
        pump.start()
    RunRecord.for_processes(child.pid).write(files)
    returncode = child.wait()
    for pump in pumps:
        pump.join(DRAIN_SECONDS)
    write_exit(files, returncode)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
