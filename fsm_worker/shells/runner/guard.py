"""Run a job's command so that it dies with its worker: `python -m fsm_worker.shells.runner.guard WORKER_PID -- ARGV...`.

The runner starts every job through this guard. On Linux it asks the kernel to SIGKILL the process when its
parent (the worker) dies (`PR_SET_PDEATHSIG`, kept across `exec`), then becomes the job's command. So a
worker that is killed outright (SIGKILL, OOM killer) leaves no job running behind it. Processes the job
itself started are its own to stop; the runner stops the whole process group whenever the worker is alive.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(
            "usage: python -m fsm_worker.shells.runner.guard WORKER_PID -- COMMAND [ARGS...]", file=sys.stderr
        )
        return 2
    worker_pid, command = int(argv[0]), argv[2:]
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != worker_pid:  # the worker died before the request took effect
            return 137
    os.execvp(command[0], command)
    return 127  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
