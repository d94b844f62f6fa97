"""Count: COUNT progress lines DELAY seconds apart, a model file and a result line, then exit with CODE."""

import json
import sys
import time
from pathlib import Path

count, delay, code = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
for i in range(1, count + 1):
    print(json.dumps({"event": "progress", "progress": i / (count + 1), "message": f"step {i}"}), flush=True)
    time.sleep(delay)
Path("outputs/model.txt").write_text("trained\n")
print(json.dumps({"event": "result", "model_file": "model.txt"}), flush=True)
print("counted", file=sys.stderr, flush=True)
sys.exit(code)
