"""Settings derived from the config classes: one default, one help text, flag / variable / TOML key alike."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from fsm_worker import cli
from fsm_worker.cli_options import COMMAND_GROUPS, command_settings, settings_markdown
from fsm_worker.client import ClientTimeouts
from fsm_worker.protocol.worker.coordinator import CoordinatorConfig
from fsm_worker.server import __main__ as server_main
from fsm_worker.settings import Settings, SettingsError, add_arguments, load_toml, settings_of
from fsm_worker.worker import WorkerConfig

DOCS = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_docs_settings_md_is_generated_from_the_config_classes() -> None:
    assert DOCS.read_text(encoding="utf-8") == settings_markdown(), (
        "docs/settings.md is stale: python -m fsm_worker.cli_options > docs/settings.md"
    )


@pytest.mark.parametrize("command", sorted(COMMAND_GROUPS))
def test_every_setting_has_help_and_a_unique_name(command: str) -> None:
    names: list[str] = []
    for group in COMMAND_GROUPS[command]:
        for item in command_settings(command, group):
            assert item.help, f"{group.__name__}.{item.field} has no help (metadata={{'help': ...}})"
            names.append(item.name)
    assert len(names) == len(set(names)), f"{command}: two settings share a name: {sorted(names)}"


@attrs.frozen
class Example:
    """A config class as another engineer would add to: each field becomes a setting with no other edit."""

    limit: int = attrs.field(default=7, metadata={"help": "a limit"})
    rate: float | None = attrs.field(default=None, metadata={"help": "a rate"})
    names: tuple[str, ...] = attrs.field(default=(), metadata={"help": "names"})
    strict: bool = attrs.field(default=False, metadata={"help": "strict"})


def _parse(argv: list[str], cls: type = Example) -> Settings:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", dest="settings_file")
    add_arguments(parser, settings_of(cls))
    args = parser.parse_args(argv)
    return Settings(args, load_toml(args.settings_file, "example"))


def test_a_new_field_is_a_flag_a_variable_and_a_toml_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = settings_of(Example)
    assert _parse([]).build(Example, items) == Example()
    flagged = _parse(["--limit", "3", "--rate", "0.5", "--names", "a,b", "--names", "c", "--strict"])
    assert flagged.build(Example, items) == Example(3, 0.5, ("a", "b", "c"), True)
    monkeypatch.setenv("FSM_WORKER_LIMIT", "4")
    monkeypatch.setenv("FSM_WORKER_NAMES", "x, y")
    toml = tmp_path / "s.toml"
    toml.write_text('limit = 9\nrate = 2.5\n[example]\nstrict = true\nnames = ["t"]\n')
    layered = _parse(["--settings", str(toml)]).build(Example, items)
    assert layered == Example(4, 2.5, ("x", "y"), True)  # variables beat the file; the file beats defaults
    assert _parse(["--limit", "1", "--settings", str(toml)]).build(Example, items).limit == 1


def test_bad_values_and_missing_required_ones_name_their_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSM_WORKER_LIMIT", "many")
    with pytest.raises(SettingsError, match="FSM_WORKER_LIMIT"):
        _parse([]).build(Example, settings_of(Example))
    with pytest.raises(SettingsError, match="--limit: not a whole number"):
        _parse(["--limit", "2.5"]).build(Example, settings_of(Example))
    with pytest.raises(SettingsError, match=r"--server is required \(or FSM_WORKER_SERVER"):
        _parse([], WorkerConfig).build(WorkerConfig, settings_of(WorkerConfig))


def test_the_worker_defaults_live_once_in_the_core_config() -> None:
    core, worker = CoordinatorConfig(), WorkerConfig("http://x", "t", "w")
    for name in ("reservation_timeout", "input_timeout", "retention"):
        assert getattr(worker, name) == getattr(core, name)
        field_help = getattr(attrs.fields(WorkerConfig), name).metadata["help"]
        assert field_help == getattr(attrs.fields(CoordinatorConfig), name).metadata["help"]


def _worker(argv: list[str]) -> WorkerConfig:
    args = cli._parser().parse_args(["worker", "--server", "http://h:1", "--token", "t", *argv])
    return cli.worker_config(Settings(args, {}))


def test_every_worker_setting_is_settable_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = _worker(
        ["--kill-grace", "2", "--rtc-setup-timeout", "3", "--shutdown-timeout", "4", "--max-upload-mb", "5",
         "--loopback-only", "--rtc-fast-path", "lan", "--workdir", "rel/wd", "--job-types", "train-demo",
         "--ice-server", "stun:127.0.0.1:3478", "--shutdown-policy", "cancel"]
    )  # fmt: skip
    assert (config.kill_grace, config.rtc_setup_timeout, config.shutdown_timeout) == (2.0, 3.0, 4.0)
    assert config.max_upload_bytes == 5 * 1024 * 1024
    assert config.loopback_only and config.rtc_fast_path == "lan" and config.shutdown_policy == "cancel"
    assert config.workdir == tmp_path / "rel" / "wd" and config.workdir.is_absolute()
    assert config.job_types == ("train-demo",) and config.ice_servers[0].urls == ("stun:127.0.0.1:3478",)
    every = {item.field for item in settings_of(WorkerConfig)}
    assert every == {f.name for f in attrs.fields(WorkerConfig)} - {"ice_servers"}


def test_client_timeouts_are_settings_of_submit() -> None:
    args = cli._parser().parse_args(["submit", "--cancel-timeout", "7", "--channel-retries", "1"])
    built = Settings(args, {}).build(ClientTimeouts, command_settings("submit", ClientTimeouts))
    assert built == ClientTimeouts(cancel=7.0, channel_retries=1)


def test_both_server_entry_points_take_the_same_settings() -> None:
    argv = ["--token", "a", "--token", "b", "--port", "0", "--redis", "redis://r:1/0", "--resume-grace", "3",
            "--node-ttl", "4", "--ping-interval", "5", "--node-id", "n1", "--max-event-bytes", "999"]  # fmt: skip
    via_cli = cli.server_config(
        Settings(cli._parser().parse_args(["server", *argv]), {}), generate_token=True
    )
    via_module = cli.server_config(Settings(server_main.parse_args(argv), {}), generate_token=False)
    assert via_cli == via_module
    assert (via_cli.tokens, via_cli.resume_grace_seconds, via_cli.node_ttl_seconds) == (["a", "b"], 3.0, 4.0)
    old_name = cli.server_config(
        Settings(server_main.parse_args(["--token", "a", "--grace", "2"]), {}), False
    )
    assert old_name.resume_grace_seconds == 2.0


def test_the_module_entry_point_requires_a_token() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fsm_worker.server"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2 and "--token is required" in result.stderr
