"""Starting a run's process: its command and environment from the job handler's launch, then the process.

``prepare`` (in a thread) validates the spec and builds the ``Prepared`` launch: a ``PythonCall`` becomes a
``python -m fsm_worker.jobs.pycall`` command, the environment is allow-listed (``environment.py``), and a
job that dies with the worker runs under ``guard``. ``spawn`` starts it in its own session: detached, a plain
child running ``wrapper`` that records it in ``<workdir>/.run/``; otherwise with piped output.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from typing import BinaryIO

from fsm_worker.jobs.launch import Command, Launch, PythonCall, ReopenableChannel
from fsm_worker.jobs.parsers import JsonLines
from fsm_worker.jobs.registry import JobTypeRegistry
from fsm_worker.jobs.spec import JobSpec
from fsm_worker.shells.runner.detached import RunFiles, wait_child
from fsm_worker.shells.runner.environment import job_environment
from fsm_worker.shells.runner.output import LINE_LIMIT
from fsm_worker.shells.runner.procgroup import RunScope
from fsm_worker.shells.runner.run import ExitProtocol, Prepared, Run
from fsm_worker.shells.runner.tail import fresh_run_files


class SpawnFailed(Exception):
    """The run's process could not be started (the message names the executable)."""


def prepare(
    registry: JobTypeRegistry, spec: JobSpec, *, python: str, env_allow: tuple[str, ...], detached: bool
) -> Prepared:
    """Runs in a thread: validate, let the handler check inputs and build, create ``outputs/``."""
    handler = registry.get(spec.job_type)
    handler.validate_config(spec.config)
    launch = handler.build(spec)
    if not isinstance(launch, Command | PythonCall):
        raise TypeError(f"build() returned {type(launch).__name__}, not Command or PythonCall")
    spec.outputs_dir.mkdir(parents=True, exist_ok=True)
    return command(launch, spec.cuda_visible_devices, python=python, env_allow=env_allow, detached=detached)


def command(
    launch: Launch,
    cuda_visible_devices: str | None = None,
    *,
    python: str,
    env_allow: tuple[str, ...],
    detached: bool,
) -> Prepared:
    """The argv, environment, parser and stop signal of ``launch`` (its executable must exist)."""
    if isinstance(launch, PythonCall):
        kwargs = json.dumps(dict(launch.kwargs))
        launch = Command((python, "-u", "-m", "fsm_worker.jobs.pycall", launch.target, kwargs),
                         launch.env, env_passthrough=launch.env_passthrough)  # fmt: skip
    slot = {} if cuda_visible_devices is None else {"CUDA_VISIBLE_DEVICES": cuda_visible_devices}
    env = job_environment(os.environ, allow=env_allow, passthrough=launch.env_passthrough,
                          extra={"PYTHONUNBUFFERED": "1", **launch.env, **slot},
                          inherit=launch.inherit_env)  # fmt: skip
    executable = launch.argv[0]
    if shutil.which(executable, path=env.get("PATH")) is None:
        raise FileNotFoundError(f"cannot start {executable!r}: no such executable")
    # dies with the worker; a detached job gets the wrapper in spawn
    guard = [] if detached else [python, "-m", "fsm_worker.shells.runner.guard", str(os.getpid()), "--"]
    parser = launch.progress if launch.progress is not None else JsonLines()
    return Prepared([*guard, *launch.argv], env, parser, launch.soft_stop_signal, launch.side_channel)


async def spawn(
    run: Run, argv: list[str], env: dict[str, str], *, python: str, log_max_bytes: int, detached: bool
) -> None:
    """Start the run's process in its own session and set its scope; raises ``SpawnFailed``."""
    spec = run.spec
    loop = asyncio.get_running_loop()
    stdout: BinaryIO | int
    stderr: BinaryIO | int
    try:
        if detached:
            run.files = RunFiles.of_workdir(spec.workdir)
            argv = [python, "-m", "fsm_worker.shells.runner.wrapper", str(run.files.directory),
                    "--log-max-bytes", str(log_max_bytes), "--", *argv]  # fmt: skip
            saved = run.channel.saved() if isinstance(run.channel, ReopenableChannel) else None
            stdout, stderr = await asyncio.to_thread(fresh_run_files, run.files, saved)
        else:
            stdout = stderr = asyncio.subprocess.PIPE
        try:
            if run.files is not None:  # a plain child: letting go of it never kills it (wait_child)
                run.wrapper = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                               cwd=spec.workdir, env=env, start_new_session=True)  # fmt: skip
                run.exited = asyncio.ensure_future(wait_child(run.wrapper))
            else:
                run.transport, run.protocol = await loop.subprocess_exec(
                    lambda: ExitProtocol(LINE_LIMIT, loop),
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    cwd=spec.workdir,
                    env=env,
                    start_new_session=True,
                )
                run.proc = asyncio.subprocess.Process(run.transport, run.protocol, loop)
        finally:
            for handle in (stdout, stderr):
                if not isinstance(handle, int):
                    handle.close()
        process = run.wrapper or run.proc
        assert process is not None
        run.scope = RunScope(process.pid, run.token)
    except OSError as exc:
        raise SpawnFailed(f"cannot start {argv[0]!r}: {exc}") from exc
