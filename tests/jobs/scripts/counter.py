"""Count: COUNT progress lines DELAY seconds apart, a model file and a result line, then exit with CODE.

An optional PAD prints that many bytes of plain filler lines (1000 bytes each at most) before each step.
"""

import json
import sys
import time
from pathlib import Path

count, delay, code = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
pad = int(sys.argv[4]) if len(sys.argv) > 4 else 0
for i in range(1, count + 1):
    for start in range(0, pad, 1000):
        print("x" * (min(pad - start, 1000) - 1), flush=True)
    print(json.dumps({"event": "progress", "progress": i / (count + 1), "message": f"step {i}"}), flush=True)
    time.sleep(delay)
Path("outputs/model.txt").write_text("trained\n")
print(json.dumps({"event": "result", "model_file": "model.txt"}), flush=True)
print("counted", file=sys.stderr, flush=True)
sys.exit(code)
