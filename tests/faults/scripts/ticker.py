"""A test job (worker-side configuration): N progress lines, DELAY seconds apart, then a result file.

With a third argument it first writes its pid to that file (so a test can clean up a run orphaned by a
killed worker).
"""

import json
import os
import sys
import time
from pathlib import Path

steps, delay = int(sys.argv[1]), float(sys.argv[2])
if len(sys.argv) > 3:
    with open(sys.argv[3], "a", encoding="utf-8") as pids:
        pids.write(f"{os.getpid()}\n")
for step in range(1, steps + 1):
    time.sleep(delay)
    print(
        json.dumps({"event": "progress", "progress": step / (steps + 1), "message": f"tick {step}/{steps}"}),
        flush=True,
    )
Path("outputs").mkdir(exist_ok=True)
Path("outputs/ticks.txt").write_text(f"{steps} ticks\n")
print(json.dumps({"event": "result", "model_file": "ticks.txt"}), flush=True)
