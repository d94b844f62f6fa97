"""A worker killed outright (SIGKILL) leaves no job process behind."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from rooms import SCRIPTS, alive, eventually


def sleeping(pid: int) -> bool:
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    return (
        b"time.sleep" in command and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "S"
    )


async def test_job_dies_with_a_killed_worker(tmp_path: Path) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPTS / "runner_host.py"), str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    assert worker.stdout is not None
    async with asyncio.timeout(20):
        job_pid = int(await worker.stdout.readline())
    # the kill must hit the job running its own command (sleeping), not the guard or the interpreter starting up
    await eventually(lambda: asyncio.to_thread(sleeping, job_pid))
    assert alive(job_pid)
    worker.send_signal(signal.SIGKILL)
    await worker.wait()
    await eventually(lambda: asyncio.to_thread(lambda: not alive(job_pid)), timeout=10)
