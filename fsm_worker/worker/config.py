"""The worker host's settings."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import attrs

from fsm_worker.shells.rtc.config import IceServerConfig

GiB = 1024**3


@attrs.frozen
class WorkerConfig:
    """Everything a worker host needs; the CLI fills it from flags, `FSM_WORKER_*` variables or TOML."""

    server_url: str
    token: str
    peer_id: str = attrs.field(factory=lambda: f"worker-{socket.gethostname()}-{uuid.uuid4().hex[:6]}")
    workdir: Path = attrs.field(converter=Path, factory=lambda: Path.home() / ".cache" / "fsm-worker")
    job_types: tuple[str, ...] = ()  # default: every type in the registry
    tags: tuple[str, ...] = ()
    gpu_memory_mb: int | None = None  # None: detected
    gpu_model: str | None = None
    cuda_version: str | None = None
    reservation_timeout: float = 30.0
    input_timeout: float = 1800.0
    retention: float = 3600.0
    job_timeout: float | None = None
    kill_grace: float = 5.0
    max_upload_bytes: int = 10 * GiB
    ice_servers: tuple[IceServerConfig, ...] = ()
    rtc_setup_timeout: float = 15.0
    shutdown_policy: str = attrs.field(default="finish", validator=attrs.validators.in_(("finish", "cancel")))
    shutdown_timeout: float = 300.0
    loopback_only: bool = False  # 127.0.0.1 as the only ICE host candidate (tests, the demo)
    rtc_fast_path: str | None = None  # "loopback" or "lan": larger SCTP packets when the peer offers them too
