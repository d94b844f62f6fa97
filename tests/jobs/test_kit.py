"""The job-type kit with real subprocesses: output parsers, typed metrics, error codes, soft stop, the job
environment, relative work directories, request-time input checks, discovery schemas and plugins."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from support.jobs import SCRIPTS, TIMEOUT, Recorder, make_spec, pid_gone

from fsm_worker.jobs import (
    Command,
    JobConfigError,
    JobInputError,
    JobRunner,
    JobSpec,
    JobTypeRegistry,
    RunFailed,
    RunProgress,
    RunSucceeded,
    TqdmBar,
    add_job_types_from,
    boolean,
    choice,
    describe_schema,
    integer,
    parse_config,
    string,
    wire_metrics,
)
from fsm_worker.jobs.parsers import AnyOf, JsonLines, LineSplitter, clean_line
from fsm_worker.jobs.plugins import add_entry_point_job_types
from fsm_worker.jobs.progress import ErrorLine, ProgressLine
from fsm_worker.protocol.messages import InputFile, Metrics
from fsm_worker.shells.runner.environment import job_environment


@attrs.frozen
class KitConfig:
    mode: str = choice("bars", ("bars", "env", "error", "graceful"), "what the test job does")
    code: str = string("MY_CODE", "error code to report")
    recoverable: bool = boolean(False)
    epochs: int = integer(2, 1, 10)


@attrs.frozen
class KitJob:
    """A job type written with the kit: schema, manifest check, tqdm parsing, declared environment."""

    def validate_config(self, config: Mapping[str, Any]) -> None:
        parse_config(KitConfig, config)

    def validate_inputs(self, manifest: Sequence[InputFile], config: Mapping[str, Any]) -> None:
        for item in manifest:
            if not item.name.endswith(".txt"):
                raise JobInputError(item.name, "only .txt inputs")

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        return 0.1

    def describe(self) -> dict[str, Any]:
        return {"config": describe_schema(KitConfig)}

    def build(self, spec: JobSpec) -> Command:
        cfg = parse_config(KitConfig, spec.config)
        args = [cfg.mode] + ([cfg.code, *(["r"] if cfg.recoverable else [])] if cfg.mode == "error" else [])
        argv = (sys.executable, "-u", str(SCRIPTS / "kit_job.py"), *args)
        parser = AnyOf((JsonLines(), TqdmBar(epochs=cfg.epochs)))
        return Command(argv, {"KIT_OWN": "1"}, progress=parser, env_passthrough=("KIT_DECLARED",))


def kit_registry() -> JobTypeRegistry:
    registry = JobTypeRegistry()
    registry.register("kit", KitJob())
    return registry


@pytest.fixture
async def kit_runner() -> Any:
    runner = JobRunner(
        kit_registry(), kill_grace=2.0, progress_interval=0.0, env_allow=("PATH", "HOME", "OWNER_*")
    )
    yield runner
    await runner.shutdown(grace_seconds=0.5)


# -- parsers (pure) ------------------------------------------------------------------------------------------


def test_tqdm_bar_gives_progress_and_metrics() -> None:
    line = clean_line(
        "\x1b[A\rEpoch 1:  40%|████      | 2/5 [00:02<00:03, 27.63it/s, loss=0.0733, val/loss=1.23e-05]"
    )
    parsed = TqdmBar(epochs=4).parse(line)
    assert parsed is not None
    assert parsed.progress == pytest.approx((1 + 0.4) / 4)
    assert parsed.metrics["loss"] == pytest.approx(0.0733) and parsed.metrics["val/loss"] == pytest.approx(
        1.23e-5
    )
    assert parsed.metrics["epoch"] == 2
    assert parsed.metrics["eta_seconds"] == pytest.approx(3 + 2 * 5)  # this epoch's 3 s + 2 epochs of 5 s
    typed = wire_metrics(parsed.metrics)
    assert typed is not None
    assert typed.loss == pytest.approx(0.0733) and typed.val_loss == pytest.approx(1.23e-5)
    assert typed == Metrics(epoch=2, loss=typed.loss, val_loss=typed.val_loss, eta_seconds=13.0)


def test_tqdm_ignores_validation_bars_and_text() -> None:
    bar = TqdmBar(epochs=2)
    assert bar.parse("Validation DataLoader 0: 100%|██████████| 3/3 [00:00<00:00, 50.1it/s]") is None
    assert bar.parse("2026-12-02 07:53:07 | Input config:") is None
    assert bar.parse("Sanity Checking: |          | 0/? [00:00<?, ?it/s]") is None
    plain = TqdmBar().parse("Predicting: 50%|█████     | 10/20 [00:01<00:01, 9.1it/s]")
    assert plain is not None and plain.progress == pytest.approx(0.5)


def test_line_splitter_cuts_at_cr_and_newline_and_drops_long_lines() -> None:
    splitter = LineSplitter(limit=10)
    assert splitter.feed(b"a\rbb\ncc") == ["a", "bb"]
    assert splitter.feed(b"c\r\n" + b"x" * 20 + b"\nok\n") == ["ccc", "ok"]
    assert splitter.dropped == 1 and splitter.flush() == []


def test_to_metrics_maps_aliases_and_keeps_extra_numbers() -> None:
    metrics = wire_metrics(
        {"train/lr": 1e-4, "global_step": 7.0, "val/loss": 0.2, "pck": 0.9, "name": "x", "nan": float("nan")}
    )
    assert metrics == Metrics(step=7, val_loss=0.2, learning_rate=1e-4, extra={"pck": 0.9})
    assert wire_metrics({"note": "text only"}) is None


def test_error_lines_carry_code_and_recoverable() -> None:
    parsed = JsonLines().parse('{"event":"error","code":"GPU_LOST","message":"m","recoverable":true}')
    assert parsed == ErrorLine("GPU_LOST", "m", True)
    assert JsonLines().parse('{"event":"error","code":"lower case","message":"m"}') is None
    assert JsonLines().parse('{"event":"error","code":"X","recoverable":"yes"}') is None


# -- schema ----------------------------------------------------------------------------------------------------


def test_schema_validates_and_lists_allowed_fields() -> None:
    assert parse_config(KitConfig, {"mode": "env", "recoverable": True}) == KitConfig(
        mode="env", recoverable=True
    )
    with pytest.raises(JobConfigError) as info:
        parse_config(KitConfig, {"epocs": 3})
    assert info.value.field == "epocs" and "allowed: code, epochs, mode, recoverable" in str(info.value)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"mode": "rm"}, "mode"), ({"recoverable": 1}, "recoverable"), ({"epochs": 0}, "epochs"),
        ({"code": "a\nb"}, "code"), ({"epochs": True}, "epochs"),
    ]  # fmt: skip
    for bad, field in cases:
        with pytest.raises(JobConfigError) as info:
            parse_config(KitConfig, bad)
        assert info.value.field == field


def test_registry_describe_is_json_and_validates_the_manifest() -> None:
    registry = kit_registry()
    described = registry.describe()
    assert json.loads(json.dumps(described)) == described
    fields = described["kit"]["config"]["fields"]
    assert fields["mode"] == {"type": "choice", "default": "bars", "help": "what the test job does",
                              "choices": ["bars", "env", "error", "graceful"]}  # fmt: skip
    assert fields["epochs"]["minimum"] == 1 and fields["epochs"]["maximum"] == 10
    assert registry.validate("kit", {}, [InputFile("notes.txt", 10)]) == 0.1
    with pytest.raises(JobInputError) as info:
        registry.validate("kit", {}, [InputFile("notes.txt", 10), InputFile("movie.mp4", 10)])
    assert info.value.name == "movie.mp4"
    assert registry.validate("kit", {}, None) == 0.1  # no manifest sent: checked after upload instead


# -- the environment -------------------------------------------------------------------------------------------


def test_job_environment_allow_list() -> None:
    worker = {"PATH": "/bin", "LC_ALL": "C", "CUDA_VISIBLE_DEVICES": "1", "AWS_SECRET": "s",
              "FSM_WORKER_TOKEN": "t", "FSM_WORKER_ICE_CREDENTIAL": "c", "OWNER_X": "o"}  # fmt: skip
    env = job_environment(
        worker, passthrough=("OWNER_*", "FSM_WORKER_*"), extra={"FSM_WORKER_TOKEN": "x", "A": "1"}
    )
    assert env == {"PATH": "/bin", "LC_ALL": "C", "CUDA_VISIBLE_DEVICES": "1", "OWNER_X": "o", "A": "1"}
    assert job_environment(worker, inherit=False, extra={"B": "2"}) == {"B": "2"}


async def test_secrets_never_reach_a_real_job(
    kit_runner: JobRunner, tmp_path: Path, monkeypatch: Any
) -> None:
    for key, value in {"FSM_WORKER_TOKEN": "tok", "FSM_WORKER_ICE_CREDENTIAL": "ice", "OWNER_GPU": "g",
                       "KIT_DECLARED": "d", "UNRELATED_SECRET": "u"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    spec = make_spec(tmp_path, "kit", {"mode": "env"})
    rec = Recorder()
    await kit_runner.start(spec, rec)
    assert isinstance(await rec.terminal(), RunSucceeded)
    env = json.loads((spec.outputs_dir / "env.json").read_text())
    assert "FSM_WORKER_TOKEN" not in env and "FSM_WORKER_ICE_CREDENTIAL" not in env
    assert "UNRELATED_SECRET" not in env
    assert env["OWNER_GPU"] == "g" and env["KIT_DECLARED"] == "d" and env["KIT_OWN"] == "1"
    assert env["PATH"] == os.environ["PATH"] and env["FSM_WORKER_RUN"]  # the runner's own tag


# -- runs ------------------------------------------------------------------------------------------------------


async def test_tqdm_progress_from_a_real_process(kit_runner: JobRunner, tmp_path: Path) -> None:
    rec = Recorder()
    await kit_runner.start(make_spec(tmp_path, "kit", {"mode": "bars"}), rec)
    end = await rec.terminal()
    assert isinstance(end, RunSucceeded) and end.output_files == ("done.txt",)
    progress = [e for e in rec.events if isinstance(e, RunProgress)]
    assert len(progress) == 10
    assert [p.metrics["epoch"] for p in progress] == [1] * 5 + [2] * 5
    assert progress[-1].progress == pytest.approx(0.999) and progress[0].progress == pytest.approx(0.1)
    last = wire_metrics(progress[-1].metrics)
    assert last is not None and last.loss == pytest.approx(0.05)


async def test_job_type_error_code_passes_through(kit_runner: JobRunner, tmp_path: Path) -> None:
    for recoverable in (False, True):
        rec = Recorder()
        spec = make_spec(tmp_path, "kit", {"mode": "error", "code": "GPU_LOST", "recoverable": recoverable},
                         job_id=f"e{recoverable}")  # fmt: skip
        await kit_runner.start(spec, rec)
        end = await rec.terminal()
        assert isinstance(end, RunFailed) and end.code == "GPU_LOST" and end.recoverable is recoverable
        assert end.message.startswith("the GPU fell off") and "output tail:\nabout to fail" in end.message


async def test_soft_stop_keeps_outputs_and_succeeds(kit_runner: JobRunner, tmp_path: Path) -> None:
    rec = Recorder()
    spec = make_spec(tmp_path, "kit", {"mode": "graceful"})
    await kit_runner.start(spec, rec)
    pid = (await rec.first_progress()).metrics["pid"]
    assert await kit_runner.stop("j1", graceful=True)
    end = await rec.terminal()
    assert isinstance(end, RunSucceeded) and end.stopped_early is True and end.output_files == ("kept.txt",)
    assert pid_gone(pid)


async def test_soft_stop_escalates_when_ignored(tmp_path: Path) -> None:
    registry = kit_registry()
    runner = JobRunner(registry, kill_grace=0.5, soft_stop_timeout=0.5)
    spec = make_spec(tmp_path, "kit", {"mode": "graceful"})

    @attrs.frozen
    class Deaf(KitJob):
        def build(self, spec: JobSpec) -> Command:
            return attrs.evolve(
                super().build(spec), soft_stop_signal=signal.SIGUSR2
            )  # not handled: ignored below

    registry.register("kit", Deaf(), replace=True)
    rec = Recorder()
    old = signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # inherited by the child: it ignores the soft stop
    try:
        await runner.start(spec, rec)
    finally:
        signal.signal(signal.SIGUSR2, old)
    await rec.first_progress()
    assert await runner.stop("j1", graceful=True)
    end = await rec.terminal()
    assert type(end).__name__ == "RunStopped"
    await runner.shutdown(0.5)


async def test_relative_workdir_becomes_absolute(
    kit_runner: JobRunner, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = JobSpec("j1", "kit", {"mode": "bars"}, Path("relwd/jobs/j1"))
    assert spec.workdir.is_absolute() and spec.inputs_dir == tmp_path / "relwd/jobs/j1/inputs"
    spec.inputs_dir.mkdir(parents=True)
    rec = Recorder()
    await kit_runner.start(spec, rec)
    end = await rec.terminal()
    assert isinstance(end, RunSucceeded) and (tmp_path / "relwd/jobs/j1/outputs/done.txt").is_file()


# -- plugins ---------------------------------------------------------------------------------------------------

WORD_TYPES = {"kit-from-mapping": KitJob()}


def test_job_types_from_module_object() -> None:
    registry = JobTypeRegistry()
    assert add_job_types_from(registry, f"{__name__}:WORD_TYPES") == ["kit-from-mapping"]
    assert add_job_types_from(registry, f"{__name__}:kit_registry") == ["kit"]
    assert add_job_types_from(registry, f"{__name__}:kit_registry") == []  # already there: kept
    with pytest.raises(TypeError):
        add_job_types_from(registry, f"{__name__}:KitConfig")
    with pytest.raises(ValueError):
        add_job_types_from(registry, "no-colon")


def test_entry_point_plugins(monkeypatch: Any) -> None:
    from importlib import metadata

    points = [
        metadata.EntryPoint("kit-plugin", f"{__name__}:KitJob", "fsm_worker.job_types"),
        metadata.EntryPoint("broken", f"{__name__}:does_not_exist", "fsm_worker.job_types"),
        metadata.EntryPoint("train-demo", f"{__name__}:KitJob", "fsm_worker.job_types"),
    ]
    monkeypatch.setattr(metadata, "entry_points", lambda group: [p for p in points if p.group == group])
    registry = JobTypeRegistry()
    registry.register("train-demo", KitJob())
    assert add_entry_point_job_types(registry) == ["kit-plugin"]
    assert type(registry.get("kit-plugin")).__name__ == "KitJob"  # imported by name, as a plugin is


def test_progress_line_type_is_reexported() -> None:
    assert ProgressLine(0.5).progress == 0.5 and TIMEOUT > 0
