"""A test job (worker-side configuration) for slots: records the CUDA_VISIBLE_DEVICES it was started with.

usage: gpu_probe.py BARRIER_DIR COUNT. It writes its pid into BARRIER_DIR and reports progress until COUNT
probes have done so (at most 30 s), which proves that COUNT of them run at the same time; then it writes
`outputs/cuda.txt` with the variable's value ("unset" when absent) and reports its result.
"""

import json
import os
import sys
import time
from pathlib import Path

barrier, count = Path(sys.argv[1]), int(sys.argv[2])
barrier.mkdir(parents=True, exist_ok=True)
(barrier / str(os.getpid())).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))
give_up = time.monotonic() + 30.0
step = 0
while len(list(barrier.iterdir())) < count:
    if time.monotonic() > give_up:
        print(f"only {len(list(barrier.iterdir()))} of {count} probes ran at once", file=sys.stderr)
        sys.exit(4)
    step += 1
    print(
        json.dumps({"event": "progress", "progress": min(step / 1000, 0.9), "message": "waiting"}), flush=True
    )
    time.sleep(0.05)
Path("outputs").mkdir(exist_ok=True)
together = len(list(barrier.iterdir()))
value = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
Path("outputs/cuda.txt").write_text(json.dumps({"cuda_visible_devices": value, "together": together}))
print(json.dumps({"event": "result", "model_file": "cuda.txt"}), flush=True)
