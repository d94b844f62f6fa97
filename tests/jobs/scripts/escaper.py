"""Test job: start a grandchild in a new session (it leaves the job's process group), then exit 0.

The grandchild keeps the job's stdout open. With "scrub" it also drops the environment (and so the
runner's tag): the runner's documented blind spot.
"""

import json
import os
import subprocess
import sys

env = {"PATH": os.environ.get("PATH", "")} if "scrub" in sys.argv[1:] else None
child = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True, env=env
)
print(json.dumps({"event": "progress", "progress": 0.5, "metrics": {"child": child.pid}}), flush=True)
