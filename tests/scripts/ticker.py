"""A test job (worker-side configuration): N progress lines, DELAY seconds apart, then a result file.

usage: ticker.py STEPS DELAY [PID_FILE]. With PID_FILE it first starts a child process that sleeps and
appends "<its pid> <child pid>" to the file: tests use it to prove that no process of a job outlives a
cancel, and to clean up after a worker killed on purpose. `TICKER_PAD=N` prints N bytes of plain filler
lines before each tick (a job that fills its logs).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

steps, delay = int(sys.argv[1]), float(sys.argv[2])
if len(sys.argv) > 3:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(sys.argv[3], "a", encoding="utf-8") as pids:
        pids.write(f"{os.getpid()} {child.pid}\n")
pad = int(os.environ.get("TICKER_PAD", "0"))
for step in range(1, steps + 1):
    time.sleep(delay)
    for start in range(0, pad, 1000):
        print("x" * (min(pad - start, 1000) - 1), flush=True)
    line = {"event": "progress", "progress": step / (steps + 1), "message": f"tick {step}/{steps}"}
    print(json.dumps(line), flush=True)
Path("outputs").mkdir(exist_ok=True)
Path("outputs/ticks.txt").write_text(f"{steps} ticks\n")
print(json.dumps({"event": "result", "model_file": "ticks.txt"}), flush=True)
