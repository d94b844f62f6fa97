"""What each `fsm-worker` command can be told: groups of settings, each an attrs class.

The library's own config classes (`ServerConfig`, `WorkerConfig`, `ClientTimeouts`) are used as they are, so a
field added to one appears as a flag, an `FSM_WORKER_*` variable, a TOML key and a row of `docs/settings.md`
with no other edit. The classes here hold only what the command line itself needs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Literal

import attrs

from fsm_worker.client import ClientTimeouts
from fsm_worker.protocol.transfer.download import DownloadLimits
from fsm_worker.server.config import ServerConfig
from fsm_worker.settings import Setting, add_arguments, settings_of
from fsm_worker.shells.rtc.config import IceServerConfig
from fsm_worker.worker import WorkerConfig

_WORKER_FIELDS = attrs.fields(WorkerConfig)


@attrs.frozen
class LogOptions:
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = attrs.field(
        default=None, metadata={"help": "log level", "default_text": "INFO (WARNING for demo)"}
    )
    json_logs: bool = attrs.field(default=False, metadata={"help": "log one JSON object per line"})


@attrs.frozen
class ConnectionOptions:
    server: str = attrs.field(metadata=_WORKER_FIELDS.server_url.metadata)
    token: str = attrs.field(metadata=_WORKER_FIELDS.token.metadata)


@attrs.frozen
class IceOptions:
    """STUN/TURN servers; the username and credential apply to the TURN ones."""

    ice_server: tuple[str, ...] = attrs.field(default=(), metadata={"help": "STUN/TURN URL"})
    ice_username: str | None = attrs.field(default=None, metadata={"help": "TURN username"})
    ice_credential: str | None = attrs.field(
        default=None,
        metadata={"help": "TURN password (better as FSM_WORKER_ICE_CREDENTIAL than a flag)", "secret": True},
    )

    def servers(self) -> tuple[IceServerConfig, ...]:
        return tuple(
            IceServerConfig(url, self.ice_username, self.ice_credential)
            if url.startswith("turn")
            else IceServerConfig(url)
            for url in self.ice_server
        )


@attrs.frozen
class RtcOptions:
    """The data channel's options on the client side (the worker's are in `WorkerConfig`)."""

    loopback_only: bool = attrs.field(default=False, metadata=_WORKER_FIELDS.loopback_only.metadata)
    rtc_fast_path: Literal["loopback", "lan"] | None = attrs.field(
        default=None, metadata=_WORKER_FIELDS.rtc_fast_path.metadata
    )


@attrs.frozen
class WorkerOptions:
    job_types_from: str | None = attrs.field(
        default=None,
        metadata={
            "help": "MODULE:OBJECT: a JobTypeRegistry (or a callable returning one) with the job types to offer",
            "default_text": "the built-in job types",
        },
    )


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "fsm-worker"


@attrs.frozen
class StateOptions:
    state_dir: Path = attrs.field(
        factory=_default_state_dir,
        metadata={
            "help": "where submit keeps what attach and cancel need (job id, worker, secrets; mode 0600)",
            "default_text": "$XDG_STATE_HOME/fsm-worker (~/.local/state/fsm-worker)",
        },
    )


_OUT_METADATA = {
    "help": "directory for the results: each job's go into a folder OUT/<job_id>/ of their own, "
    "and no existing file is replaced"
}


@attrs.frozen
class SubmitOptions:
    job_type: str = attrs.field(metadata={"help": "the job type, e.g. train-demo"})
    input: tuple[str, ...] = attrs.field(default=(), metadata={"help": "input file"})
    job_config: tuple[str, ...] = attrs.field(
        default=(),
        metadata={"aliases": ("--config",), "help": "job config entry KEY=VALUE (a JSON value or a string)"},
    )
    min_gpu_memory_mb: int = attrs.field(
        default=0, metadata={"help": "only workers with at least this much GPU memory"}
    )
    out: Path = attrs.field(default=Path("results"), metadata=_OUT_METADATA)
    bid_window: float = attrs.field(
        default=0.0, metadata={"help": "seconds to collect offers and take the fastest (0: the first)"}
    )
    wait: bool = attrs.field(
        default=False,
        metadata={
            "help": "when no worker has a free slot, wait in a worker's queue (the earliest estimated start)"
        },
    )
    job_gpus: int = attrs.field(
        default=1,
        metadata={"aliases": ("--gpus",), "help": "slots (GPUs) the job needs together on one worker"},
    )


@attrs.frozen
class JobChoice:
    job_id: str | None = attrs.field(
        default=None,
        metadata={"help": "the job (as printed by submit)", "default_text": "the latest one submitted"},
    )
    out: Path = attrs.field(default=Path("results"), metadata=_OUT_METADATA)


@attrs.frozen
class DemoOptions:
    workdir: Path | None = attrs.field(
        default=None,
        metadata={"help": "where the dataset, worker files and results go", "default_text": "a temp dir"},
    )
    rows: int = attrs.field(default=20_000, metadata={"help": "rows in the generated dataset"})
    epochs: int = attrs.field(default=30, metadata={"help": "training epochs"})
    sleap: bool = attrs.field(
        default=False,
        metadata={"help": "train a tiny real SLEAP model instead (needs `pip install 'fsm-worker[sleap]'`)"},
    )


@attrs.frozen
class DiagramOptions:
    out: Path | None = attrs.field(
        default=None, metadata={"help": "directory", "default_text": "the repository's diagrams/"}
    )


@attrs.frozen
class DoctorOptions:
    workdir: Path = attrs.field(
        factory=lambda: Path.home() / ".cache" / "fsm-worker",
        metadata={
            "help": "the worker's work directory (holds the journal)",
            "default_text": "~/.cache/fsm-worker",
        },
    )
    min_free_mb: int = attrs.field(default=1024, metadata={"help": "free space the workdir needs, in MiB"})


#: The groups of settings of each command, in the order `--help` and the docs show them.
COMMAND_GROUPS: dict[str, tuple[type, ...]] = {
    "server": (ServerConfig, LogOptions),
    "worker": (WorkerConfig, WorkerOptions, IceOptions, LogOptions),
    "submit": (
        ConnectionOptions,
        SubmitOptions,
        StateOptions,
        RtcOptions,
        IceOptions,
        ClientTimeouts,
        DownloadLimits,
        LogOptions,
    ),
    "attach": (
        ConnectionOptions,
        JobChoice,
        StateOptions,
        RtcOptions,
        IceOptions,
        ClientTimeouts,
        DownloadLimits,
        LogOptions,
    ),
    "cancel": (ConnectionOptions, JobChoice, StateOptions, ClientTimeouts, LogOptions),
    "status": (ConnectionOptions, ClientTimeouts, LogOptions),
    "demo": (DemoOptions, LogOptions),
    "diagram": (DiagramOptions, LogOptions),
    "doctor": (DoctorOptions, LogOptions),
}

#: Fields a command fills itself (not settings there): `fsm-worker server` generates a token when none is set.
OPTIONAL_REQUIRED = {("server", "tokens")}


def command_settings(command: str, group: type) -> list[Setting]:
    settings = settings_of(group)
    if (command, "tokens") in OPTIONAL_REQUIRED and group is ServerConfig:
        settings = [
            attrs.evolve(item, required=False, default_text="generated") if item.field == "tokens" else item
            for item in settings
        ]
    return settings


def add_command_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    for group in COMMAND_GROUPS[command]:
        title = (group.__doc__ or "").strip().splitlines()[0] if group.__module__ != __name__ else None
        section = parser.add_argument_group(group.__name__, title)
        add_arguments(section, command_settings(command, group))  # type: ignore[arg-type]


def settings_markdown() -> str:
    """`docs/settings.md`: every setting of every command."""
    lines = [
        "# Settings",
        "",
        "<!-- generated by `python -m fsm_worker.cli_options > docs/settings.md`; a test fails when stale -->",
        "",
        "Every setting can be given as a flag, as an `FSM_WORKER_*` environment variable or as a key of a TOML",
        "file (`--settings FILE` or `FSM_WORKER_SETTINGS`), in that order of precedence. In the TOML file keys",
        "may sit at the top level or in a table per command (`[worker]`, `[submit]`, ...), which wins. A list",
        "setting is a repeated flag, a comma-separated variable or a TOML array; a boolean flag has a `--no-`",
        "form. Each setting is a field of a config class (named per section), which holds its only default.",
        "",
    ]
    for command, groups in COMMAND_GROUPS.items():
        lines += [f"## `fsm-worker {command}`", ""]
        for group in groups:
            module = "fsm_worker.cli_options" if group.__module__ == "__main__" else group.__module__
            lines += [
                f"`{module}.{group.__name__}`",
                "",
                "| flag | variable | TOML key | default | meaning |",
                "|---|---|---|---|---|",
            ]
            for item in command_settings(command, group):
                flags = ", ".join(f"`{flag}`" for flag in (item.flag, *item.aliases))
                lines.append(
                    f"| {flags} | `{item.env}` | `{item.name}` | `{item.shown_default()}` | {item.help} |"
                )
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_markdown(), end="")
