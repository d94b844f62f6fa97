"""The worker core's test capabilities and configuration, shared by the core's tests and the journal's."""

from __future__ import annotations

from fsm_worker.protocol.worker.capabilities import WorkerCapabilities
from fsm_worker.protocol.worker.coordinator import CoordinatorConfig

CAPS = WorkerCapabilities(
    gpu_memory_mb=8192,
    gpu_model="Test GPU",
    cuda_version="12.4",
    supported_job_types=("train-demo",),
    hostname="test",
)
#: The first-input deadline is off here; `test_first_input.py` covers it. These tests drive the core directly
#: with keyless requests (bound to the peer id), so the per-job key the default requires is turned off here;
#: `test_require_key.py` covers the default and `test_scenarios.py` the keyed path.
CONFIG = CoordinatorConfig(
    reservation_timeout=30.0,
    input_timeout=600.0,
    retention=3600.0,
    first_input_timeout=float("inf"),
    require_job_key=False,
)
