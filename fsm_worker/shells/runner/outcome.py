"""How a finished run is reported: the terminal event from the exit status, the stop and what the job said."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from fsm_worker.jobs.spec import ErrorCode
from fsm_worker.protocol.worker.events import RunFailed, RunStopped, RunSucceeded, TerminalEvent
from fsm_worker.shells.runner.run import Run

log = logging.getLogger(__name__)


def tail(run: Run) -> str:
    return run.output.tail() if run.output is not None else ""


def outcome(run: Run, returncode: int | None) -> TerminalEvent:
    """The terminal event of a run that did not succeed (``succeeded`` covers success)."""
    job_id = run.spec.job_id
    if run.stop_requested:
        return RunStopped(job_id)
    if run.timed_out:
        message = f"timed out after {run.timeout:g} s" + tail(run)
        return RunFailed(job_id, ErrorCode.TIMEOUT, message, True)
    if returncode is not None and returncode < 0:
        message = f"killed by {_signal_name(-returncode)}" + tail(run)
        return RunFailed(job_id, ErrorCode.KILLED, message, True)
    if run.error is not None and run.error.code != ErrorCode.EXIT_NONZERO:
        # The job classified its failure: its code passes through (INPUT_INVALID is never recoverable).
        error = run.error
        recoverable = bool(error.recoverable) and error.code != ErrorCode.INPUT_INVALID
        return RunFailed(job_id, _known(error.code), error.message + tail(run), recoverable)
    reported = f": {run.error.message}" if run.error is not None and run.error.message else ""
    message = f"exit code {returncode}{reported}" + tail(run)
    return RunFailed(job_id, ErrorCode.EXIT_NONZERO, message, False)


def succeeded(run: Run, now: float) -> RunSucceeded:
    """Runs in a thread: list the outputs, size the model file the job named."""
    outputs = run.spec.outputs_dir
    files = tuple(sorted(str(p.relative_to(outputs)) for p in outputs.rglob("*") if _regular(p)))
    size_mb = None
    if run.result is not None and run.result.model_file:
        model = outputs / run.result.model_file
        if model.resolve().is_relative_to(outputs.resolve()) and _regular(model):
            size_mb = model.stat().st_size / 1_000_000
        else:
            log.warning("job %s: model file %r is not in outputs", run.spec.job_id, run.result.model_file)
    minutes = (now - run.started_at) / 60
    metrics = run.result.metrics if run.result is not None else {}
    return RunSucceeded(run.spec.job_id, minutes, size_mb, files, metrics, run.stop_early_requested)


def _known(code: str) -> ErrorCode | str:
    """One of the runner's own codes as its ``ErrorCode``, a job type's code as it is."""
    try:
        return ErrorCode(code)
    except ValueError:
        return code


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
