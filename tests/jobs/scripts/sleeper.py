"""Test job: start a grandchild, report both pids as progress metrics, then sleep.

argv: [stubborn] [exit] [escape] — "stubborn": both processes ignore SIGTERM; "exit": the job exits 0
right after reporting, leaving the grandchild behind; "escape": the grandchild calls setsid().
"""

import json
import os
import signal
import subprocess
import sys
import time

stubborn = "stubborn" in sys.argv[1:]
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
code = "import signal, sys, time\n"
if stubborn:
    code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
code += "print('ready', flush=True)\ntime.sleep(600)\n"
# The grandchild inherits stderr (a pipe the runner reads) and reports readiness on its own pipe.
escape = "escape" in sys.argv[1:]
child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=escape)
assert child.stdout is not None
child.stdout.readline()
metrics = {"pid": os.getpid(), "child": child.pid}
print(
    json.dumps({"event": "progress", "progress": 0.1, "message": "sleeping", "metrics": metrics}), flush=True
)
if "exit" in sys.argv[1:]:
    sys.exit(0)
time.sleep(600)
