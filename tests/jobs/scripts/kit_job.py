"""Test job for the kit: tqdm-style bars with `\\r`, ANSI codes, a plain line, env report, soft-stop handling.

Modes: `bars` (two epochs of bars, then exit 0), `env` (print the environment as JSON), `error CODE
[recoverable]` (report a job-type error code, exit 1), `graceful` (loop until SIGINT, write outputs/kept.txt,
exit 1 as sleap-nn does).
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

mode = sys.argv[1]
if mode == "bars":
    for epoch in range(2):
        for step in range(1, 6):
            bar = f"\x1b[32mEpoch {epoch}:\x1b[0m {step * 20:3d}%|{'#' * step}{' ' * (5 - step)}| {step}/5 "
            sys.stdout.write(
                f"\r{bar}[00:01<00:0{5 - step}, 4.2it/s, loss={0.5 / (epoch * 5 + step):.3g}, v_num=0]"
            )
            sys.stdout.flush()
        sys.stdout.write("\n")
    print("a plain line the worker logs")
    Path("outputs", "done.txt").write_text("ok")
elif mode == "env":
    print(json.dumps({"event": "result", "metrics": {}}))
    Path("outputs", "env.json").write_text(json.dumps(dict(os.environ)))
elif mode == "error":
    print("\x1b[31mabout to fail\x1b[0m", flush=True)
    line: dict[str, object] = {"event": "error", "code": sys.argv[2], "message": "the GPU fell off"}
    if len(sys.argv) > 3:
        line["recoverable"] = True
    print(json.dumps(line), flush=True)
    sys.exit(1)
elif mode == "graceful":
    stop: list[int] = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print(json.dumps({"event": "progress", "progress": 0.2, "metrics": {"pid": os.getpid()}}), flush=True)
    while not stop:
        time.sleep(0.02)
    Path("outputs", "kept.txt").write_text("checkpoint")
    sys.exit(1)
