"""A test job for slots (issue 12): sleeps, and records what slot it saw.

usage: slot_job.py SECONDS LOG JOB_ID. Appends one JSON line to LOG when it starts and one when it ends:
{"job_id", "event": "start" | "end", "cuda": CUDA_VISIBLE_DEVICES (null when unset), "t": time.time(), "pid"}.
A test reads LOG to prove no GPU was in two jobs at once; the pid lets it clean up after a killed worker.
SIGTERM (a cancel) records the end before exiting.
"""

import json
import os
import signal
import sys
import time


def record(event: str) -> None:
    line = {
        "job_id": job_id,
        "event": event,
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "t": time.time(),
    }
    line["pid"] = os.getpid()
    with open(log, "a", encoding="utf-8") as out:  # one short write per line: appends do not interleave
        out.write(json.dumps(line) + "\n")


def stopped(signum: int, frame: object) -> None:
    """Cancelled (SIGTERM from the worker): the end is recorded too, so the slot's use has a known end."""
    record("end")
    sys.exit(128 + signum)


seconds, log, job_id = float(sys.argv[1]), sys.argv[2], sys.argv[3]
signal.signal(signal.SIGTERM, stopped)
record("start")
print(json.dumps({"event": "progress", "progress": 0.5, "message": "sleeping"}), flush=True)
time.sleep(seconds)
record("end")
