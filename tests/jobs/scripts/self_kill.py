"""Test job: die from SIGKILL sent to itself."""

import os
import signal

os.kill(os.getpid(), signal.SIGKILL)
