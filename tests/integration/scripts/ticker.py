"""A test job (worker-side configuration): N progress lines, DELAY seconds apart, then a result file.

With a third argument, writes its pid (and its child's) to that file first, and starts a child process
that sleeps: the tests use it to prove that no process of a job survives its cancellation.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

steps, delay = int(sys.argv[1]), float(sys.argv[2])
if len(sys.argv) > 3:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(sys.argv[3]).write_text(f"{__import__('os').getpid()} {child.pid}\n")
for step in range(1, steps + 1):
    time.sleep(delay)
    print(
        json.dumps({"event": "progress", "progress": step / (steps + 1), "message": f"tick {step}/{steps}"}),
        flush=True,
    )
Path("outputs").mkdir(exist_ok=True)
Path("outputs/ticks.txt").write_text(f"{steps} ticks\n")
print(json.dumps({"event": "result", "model_file": "ticks.txt"}), flush=True)
