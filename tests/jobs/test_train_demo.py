"""The built-in train-demo job: config validation, input checks, CSV loading and real runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.jobs import Recorder, make_spec

from fsm_worker.jobs import (
    ErrorCode,
    JobConfigError,
    JobInputError,
    JobRunner,
    RunFailed,
    RunProgress,
    RunStarted,
    RunSucceeded,
    UnknownJobType,
    default_registry,
)
from fsm_worker.jobs.sample_data import generate_sample_csv
from fsm_worker.jobs.sleap import sleap_available
from fsm_worker.jobs.train_demo import (
    DataError,
    TrainDemoConfig,
    TrainDemoHandler,
    load_csv,
    load_model,
    train,
)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": "20"}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"batch_size": 0}, "batch_size"),
        ({"hidden_units": 5000}, "hidden_units"),
        ({"validation_split": 0.9}, "validation_split"),
        ({"label_column": ""}, "label_column"),
        ({"input": "../etc/passwd"}, "input"),
        ({"input": "a\x00b"}, "input"),
        ({"command": "rm -rf /"}, "command"),
        (["epochs", 3], "config"),
    ],
)
def test_bad_config_names_the_field(config: dict[str, object], field: str) -> None:
    with pytest.raises(JobConfigError) as info:
        TrainDemoConfig.from_mapping(config)
    assert info.value.field == field and info.value.code is ErrorCode.INPUT_INVALID


def test_registry_validate_and_estimate() -> None:
    registry = default_registry(plugins=False)
    sleap = ["sleap-track", "sleap-train"] if sleap_available() else []
    assert registry.names() == [*sleap, "train-demo"] and "train-demo" in registry
    assert 0 < registry.validate("train-demo", {"epochs": 5, "learning_rate": 0.1}) < 1
    assert registry.validate("train-demo", {"epochs": 50}) > registry.validate("train-demo", {})
    assert registry.get("train-demo").estimate_minutes({"epochs": "junk"}) > 0  # never raises
    with pytest.raises(UnknownJobType) as info:
        registry.validate("rm", {})
    assert info.value.field == "job_type"
    with pytest.raises(ValueError, match="already registered"):
        registry.register("train-demo", TrainDemoHandler())


def test_build_checks_inputs_and_never_passes_config_as_command(tmp_path: Path) -> None:
    handler = TrainDemoHandler()
    spec = make_spec(tmp_path, "train-demo", {"label_column": "--evil"})
    with pytest.raises(JobInputError, match="exactly one"):
        handler.build(spec)
    (spec.inputs_dir / "a.csv").write_text("x,--evil\n1,0\n")
    command = handler.build(spec)
    assert command.argv[1:4] == ("-u", "-m", "fsm_worker.jobs.train_demo")
    assert "--label-column=--evil" in command.argv  # a value, never an option of its own
    (spec.inputs_dir / "b.csv").write_text("x,label\n1,0\n")
    with pytest.raises(JobInputError, match="exactly one"):
        handler.build(spec)
    with pytest.raises(JobInputError, match="label column"):
        handler.build(make_spec(tmp_path, "train-demo", {"input": "b.csv", "label_column": "y"}))
    with pytest.raises(JobInputError, match="no such"):
        handler.build(make_spec(tmp_path, "train-demo", {"input": "c.csv"}))
    (spec.inputs_dir / "bin.csv").write_bytes(b"\xff\xfe\x00label\n")
    with pytest.raises(JobInputError, match="unreadable"):
        handler.build(make_spec(tmp_path, "train-demo", {"input": "bin.csv"}))


def test_load_csv_errors_and_string_labels(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,species\n1,2,cat\n3,4,dog\n5,6,cat\n")
    data = load_csv(path, "species")
    assert data.classes == ("cat", "dog") and data.features.shape == (3, 2)
    assert data.feature_names == ("a", "b") and list(data.labels) == [0, 1, 0]
    path.write_text("a,label\n1,0\nx,1\n")
    with pytest.raises(DataError, match="line 3, column 'a'"):
        load_csv(path, "label")
    path.write_text("a,label\n1,0\n2,0\n")
    with pytest.raises(DataError, match="fewer than two classes"):
        load_csv(path, "label")
    path.write_text("a,label\n1,0\n2\n")
    with pytest.raises(DataError, match="line 3 has 1 fields"):
        load_csv(path, "label")


def test_training_in_process_learns_multiclass(tmp_path: Path) -> None:
    path = generate_sample_csv(tmp_path / "m.csv", rows=1500, features=5, seed=4, classes=4)
    data = load_csv(path, "label")
    cfg = TrainDemoConfig(epochs=10, seed=1)
    *_, (epoch, metrics, model) = train(data, cfg)
    assert epoch == 10 and metrics["val_accuracy"] > 0.85
    model.save(tmp_path / "model.npz")
    again = load_model(tmp_path / "model.npz")
    np.testing.assert_allclose(again.logits(data.features), model.logits(data.features))
    assert again.classes == ("0", "1", "2", "3")


def test_softmax_regression_variant(tmp_path: Path) -> None:
    data = load_csv(generate_sample_csv(tmp_path / "s.csv", rows=800, features=3, seed=2), "label")
    *_, (_, metrics, model) = train(data, TrainDemoConfig(epochs=5, hidden_units=0, learning_rate=0.05))
    assert len(model.weights) == 1 and metrics["accuracy"] > 0.9


async def test_train_demo_run_succeeds_and_writes_a_model(runner: JobRunner, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "train-demo", {"epochs": 8, "seed": 3})
    csv_path = generate_sample_csv(spec.inputs_dir / "train.csv", rows=10_000, features=8, seed=11)
    rec = Recorder()
    await runner.start(spec, rec)
    end = await rec.terminal()
    assert isinstance(end, RunSucceeded), end
    assert isinstance(rec.events[0], RunStarted)
    progress = [e for e in rec.events[1:-1] if isinstance(e, RunProgress)]
    assert len(progress) == len(rec.events) - 2 == 9  # "loaded" + one per epoch (interval 0 here)
    values = [p.progress for p in progress]
    assert values == sorted(values) and all(0 < v < 1 for v in values)
    assert [p.metrics.get("epoch") for p in progress[1:]] == list(range(1, 9))
    assert progress[-1].message.startswith("epoch 8/8 loss=")
    assert end.output_files == ("metrics.json", "model.npz")
    assert end.model_size_mb is not None and 0 < end.model_size_mb < 1
    assert end.training_duration_minutes > 0 and end.metrics["val_accuracy"] > 0.95
    model = load_model(spec.outputs_dir / "model.npz")
    data = load_csv(csv_path, "label")
    predicted = np.array(model.predict(data.features))
    assert (predicted == np.array(data.classes)[data.labels]).mean() > 0.95


async def test_train_demo_named_input_and_label_column(runner: JobRunner, tmp_path: Path) -> None:
    config = {"input": "iris.csv", "label_column": "kind", "epochs": 3, "batch_size": 16}
    spec = make_spec(tmp_path, "train-demo", config)
    generate_sample_csv(
        spec.inputs_dir / "iris.csv", rows=300, features=4, seed=5, classes=3, label_column="kind"
    )
    (spec.inputs_dir / "other.csv").write_text("unrelated\n")
    rec = Recorder()
    await runner.start(spec, rec)
    end = await rec.terminal()
    assert isinstance(end, RunSucceeded), end
    assert load_model(spec.outputs_dir / "model.npz").classes == ("0", "1", "2")


async def test_train_demo_bad_config_is_input_invalid(runner: JobRunner, tmp_path: Path) -> None:
    rec = Recorder()
    await runner.start(make_spec(tmp_path, "train-demo", {"epochs": -3}), rec)
    end = await rec.terminal()
    assert isinstance(end, RunFailed) and end.code is ErrorCode.INPUT_INVALID
    assert "'epochs'" in end.message and end.recoverable is False and rec.events == [end]


async def test_train_demo_missing_input_is_input_invalid(runner: JobRunner, tmp_path: Path) -> None:
    rec = Recorder()
    await runner.start(make_spec(tmp_path, "train-demo", {"input": "data.csv"}), rec)
    end = await rec.terminal()
    assert isinstance(end, RunFailed) and end.code is ErrorCode.INPUT_INVALID and "data.csv" in end.message


async def test_train_demo_bad_cell_reported_by_the_job(runner: JobRunner, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "train-demo")
    (spec.inputs_dir / "d.csv").write_text("a,label\n1,0\n2,1\noops,1\n")
    rec = Recorder()
    await runner.start(spec, rec)
    end = await rec.terminal()
    assert isinstance(rec.events[0], RunStarted)
    assert isinstance(end, RunFailed) and end.code is ErrorCode.INPUT_INVALID and end.recoverable is False
    assert "line 4, column 'a'" in end.message
