"""Test job: write argv[1] progress lines as fast as it can, then a result."""

import json
import sys

total = int(sys.argv[1])
for i in range(1, total + 1):
    line = {"event": "progress", "progress": i / total, "message": f"step {i}", "metrics": {"i": i}}
    sys.stdout.write(json.dumps(line) + "\n")
sys.stdout.write(json.dumps({"event": "result", "model_file": None}) + "\n")
