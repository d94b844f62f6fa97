"""Built-in SLEAP job types: ``sleap-train`` and ``sleap-track`` (``pip install 'fsm-worker[sleap]'``).

They are offered only where sleap-nn is installed: ``sleap_available()`` looks for the packages without
importing them (torch is never imported in the worker's process).
"""

from __future__ import annotations

import functools
import importlib.util

from fsm_worker.jobs.sleap.handlers import (
    SLEAP_TRACK,
    SLEAP_TRAIN,
    SleapTrackConfig,
    SleapTrackHandler,
    SleapTrainConfig,
    SleapTrainHandler,
)

REQUIRED_MODULES = ("sleap_nn", "sleap_io", "torch", "zmq", "omegaconf")


@functools.cache
def sleap_available() -> bool:
    """True where sleap-nn and what the job types need can be imported (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in REQUIRED_MODULES)


__all__ = [
    "SLEAP_TRACK",
    "SLEAP_TRAIN",
    "SleapTrackConfig",
    "SleapTrackHandler",
    "SleapTrainConfig",
    "SleapTrainHandler",
    "sleap_available",
]
