"""The worker host's settings: the CLI's flags, `FSM_WORKER_*` variables and TOML keys are derived from these fields."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any, Literal

import attrs

from fsm_worker.jobs.launch import names_tuple
from fsm_worker.protocol.transfer.store_policy import DEFAULT_STORE_QUOTA_BYTES, DEFAULT_STORE_RETENTION
from fsm_worker.protocol.worker.coordinator import CoordinatorConfig
from fsm_worker.shells.rtc.config import IceServerConfig
from fsm_worker.shells.signaling import DEFAULT_MAX_INFLIGHT_PER_PEER, DEFAULT_MAX_QUEUED_PER_PEER

GiB = 1024**3


def _core_default(name: str) -> Any:
    """A `WorkerConfig` field that takes its default and help from `CoordinatorConfig` (one source)."""
    core = getattr(attrs.fields(CoordinatorConfig), name)
    return attrs.field(default=core.default, validator=core.validator, metadata=core.metadata)


def _absolute(path: str | Path) -> Path:
    return Path(path).expanduser().absolute()


def _at_least(minimum: float) -> Any:
    """A validator whose refusal names the setting (its `name` metadata, else the field) and the bound."""

    def check(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if value < minimum:
            name = attribute.metadata.get("name", attribute.name)
            scale = attribute.metadata.get("scale", 1)
            shown = value / scale if scale != 1 else value
            raise ValueError(
                f"{name} must be at least {minimum / scale if scale != 1 else minimum}, not {shown}"
            )

    return check


@attrs.frozen
class WorkerConfig:
    """Everything a worker host needs; the CLI's flags, `FSM_WORKER_*` variables and TOML keys come from here."""

    server_url: str = attrs.field(
        metadata={"name": "server", "help": "signaling server URL, e.g. http://127.0.0.1:8765"}
    )
    token: str = attrs.field(metadata={"help": "room token", "secret": True})
    peer_id: str = attrs.field(
        factory=lambda: f"worker-{socket.gethostname()}-{uuid.uuid4().hex[:6]}",
        metadata={"help": "this worker's id", "default_text": "worker-<hostname>-<random>"},
    )
    workdir: Path = attrs.field(
        converter=_absolute,
        factory=lambda: Path.home() / ".cache" / "fsm-worker",
        metadata={
            "help": "job files and the content store (made absolute)",
            "default_text": "~/.cache/fsm-worker",
        },
    )
    job_types: tuple[str, ...] = attrs.field(
        default=(),
        converter=names_tuple,
        metadata={"help": "job types to offer (empty: every registered one)"},
    )
    tags: tuple[str, ...] = attrs.field(
        default=(), converter=names_tuple, metadata={"help": "discovery tags"}
    )
    gpu_memory_mb: int | None = attrs.field(
        default=None, metadata={"help": "GPU memory to advertise", "default_text": "detected"}
    )
    gpu_model: str | None = attrs.field(
        default=None, metadata={"help": "GPU model to advertise", "default_text": "detected"}
    )
    cuda_version: str | None = attrs.field(
        default=None, metadata={"help": "CUDA version to advertise", "default_text": "detected"}
    )
    gpus: tuple[str, ...] = attrs.field(
        default=("auto",),
        converter=names_tuple,
        validator=attrs.validators.deep_iterable(attrs.validators.matches_re(r"auto|\d+(:\d*(:[^:]+)?)?")),
        metadata={
            "help": "GPUs to offer, one slot each, as INDEX[:MEMORY_MB[:MODEL]] (e.g. 0,2,3 or "
            "0:24576:RTX-4090,1:8192:T4; memory and model default to what NVML finds); auto: every GPU NVML finds",
        },
    )
    slots: int = attrs.field(
        default=1,
        validator=attrs.validators.ge(1),
        metadata={"help": "slots of a host without GPUs (jobs it runs at once); ignored when GPUs are used"},
    )
    queue_size: int = _core_default("queue_size")
    queue_lease: float = _core_default("queue_lease")
    max_jobs_per_client: int = _core_default("max_jobs_per_client")
    queue_bypass_limit: int = _core_default("queue_bypass_limit")
    require_job_key: bool = _core_default("require_job_key")
    connect_timeout: float = attrs.field(
        default=10.0, metadata={"help": "seconds to reach the signaling server at start"}
    )
    reservation_timeout: float = _core_default("reservation_timeout")
    input_timeout: float = _core_default("input_timeout")
    first_input_timeout: float = _core_default("first_input_timeout")
    retention: float = _core_default("retention")
    job_timeout: float | None = attrs.field(
        default=None, metadata={"help": "seconds a run may take", "default_text": "unlimited"}
    )
    kill_grace: float = _core_default("kill_grace")
    job_lifetime: Literal["detached", "with_worker"] = attrs.field(
        default="detached",
        validator=attrs.validators.in_(("detached", "with_worker")),
        metadata={"help": "detached: a job outlives the worker process and is adopted again after a restart; "
                  "with_worker: it dies with the worker (PR_SET_PDEATHSIG)"},
    )  # fmt: skip
    job_log_max_bytes: int = attrs.field(
        default=64 * 1024 * 1024,
        validator=attrs.validators.ge(4096),
        metadata={"help": "bytes a detached job's stdout.log and stderr.log each hold before they rotate to "
                  "one .1 file (at most twice this on disk per stream)"},
    )  # fmt: skip
    max_upload_bytes: int = attrs.field(
        default=10 * GiB,
        metadata={"name": "max_upload_mb", "scale": 1024 * 1024, "help": "largest upload per job, in MiB"},
    )
    ice_servers: tuple[IceServerConfig, ...] = attrs.field(default=(), metadata={"cli": False})
    rtc_setup_timeout: float = attrs.field(
        default=15.0, metadata={"help": "seconds to answer an offer and open the data channel"}
    )
    shutdown_policy: Literal["finish", "cancel"] = _core_default("shutdown_policy")
    shutdown_timeout: float = _core_default("shutdown_timeout")
    loopback_only: bool = attrs.field(
        default=False, metadata={"help": "127.0.0.1 as the only ICE host candidate (tests, one machine)"}
    )
    rtc_fast_path: Literal["loopback", "lan"] | None = attrs.field(
        default=None,
        metadata={"help": "larger SCTP packets on the data channel when the peer offers them too"},
    )
    journal: bool = attrs.field(
        default=True,
        metadata={
            "help": "journal the core's events in workdir/journal.sqlite and restore them on start, adopting "
            "a detached job that outlived the worker (docs/durability.md)"
        },
    )
    journal_durable: bool = attrs.field(
        default=False,
        metadata={
            "help": "fsync every journal commit (survives a power loss, not only a crash of the worker)"
        },
    )
    metrics_port: int | None = attrs.field(
        default=None,
        metadata={
            "help": "serve Prometheus `GET /metrics` on this port (0: a free one); docs/metrics.md",
            "default_text": "off",
        },
    )
    metrics_host: str = attrs.field(
        default="127.0.0.1", metadata={"help": "the interface the worker's `/metrics` listens on"}
    )
    publish_hostname: bool = attrs.field(
        default=False,
        metadata={
            "help": "publish this machine's hostname in discovery metadata (every peer of the room sees it)"
        },
    )
    publish_job_summary: bool = attrs.field(
        default=True,
        metadata={
            "help": "publish the running job's progress and metrics as `metadata.job` (the dashboard reads it)"
        },
    )
    job_env_allow: tuple[str, ...] = attrs.field(
        default=(),
        converter=names_tuple,
        metadata={
            "help": "more worker environment variables (names or PREFIX*) a job may see, beyond the "
            "allow-list (PATH, HOME, locale, CUDA/GPU); FSM_WORKER_* never reach a job"
        },
    )
    max_input_files: int = attrs.field(
        default=1000,
        validator=_at_least(1),
        metadata={"help": "most input files one job may upload (the refusal names this setting)"},
    )
    store_retention: float = attrs.field(
        default=DEFAULT_STORE_RETENTION,
        validator=_at_least(0),
        metadata={
            "help": "seconds an unused content-store entry is kept (collected after each job's cleanup)"
        },
    )
    store_quota_bytes: int = attrs.field(
        default=DEFAULT_STORE_QUOTA_BYTES,
        validator=_at_least(0),
        metadata={
            "name": "store_quota_mb",
            "scale": 1024 * 1024,
            "help": "most MiB the content store keeps; above it the least recently used entries go",
        },
    )
    max_inflight_per_peer: int = attrs.field(
        default=DEFAULT_MAX_INFLIGHT_PER_PEER,
        validator=_at_least(1),
        metadata={"help": "messages to one peer whose server ack the signaling link awaits at once"},
    )
    max_queued_per_peer: int = attrs.field(
        default=DEFAULT_MAX_QUEUED_PER_PEER,
        validator=_at_least(1),
        metadata={
            "help": "messages waiting for one peer in the signaling link; more are refused `QUEUE_FULL`"
        },
    )
