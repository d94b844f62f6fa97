"""The SLEAP job types' worker side, without sleap-nn: config schema, request-time input checks, the launch
they build, and the translation of sleap-nn's ZMQ messages (the real runs are in tests/system/test_sleap.py)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from fsm_worker.jobs import JobConfigError, JobInputError, JobSpec
from fsm_worker.jobs.sleap import SleapTrackHandler, SleapTrainHandler
from fsm_worker.jobs.sleap.inputs import HDF5_MAGIC, prepare_model_dir, track_inputs, train_inputs
from fsm_worker.jobs.sleap.predict_progress import PredictProgress
from fsm_worker.jobs.sleap.zmq_channel import SleapZmqChannel, ZmqProgress
from fsm_worker.protocol.messages import InputFile

TINY = {
    "max_epochs": 2,
    "batch_size": 2,
    "steps_per_epoch": 5,
    "filters": 8,
    "max_stride": 8,
    "output_stride": 4,
}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"model_type": "transformer"}, "model_type"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"validation_fraction": 0.95}, "validation_fraction"),
        ({"max_stride": 12}, "max_stride"),
        ({"max_stride": 8, "output_stride": 16}, "output_stride"),
        ({"epochs": 3}, "epochs"),
        ({"backbone": "convnext", "filters": 8}, "filters"),
    ],
)
def test_train_config_refused_with_the_field_named(config: dict[str, object], field: str) -> None:
    with pytest.raises(JobConfigError) as info:
        SleapTrainHandler().validate_config(config)
    assert info.value.field == field


def test_unknown_field_lists_the_allowed_ones() -> None:
    with pytest.raises(JobConfigError, match=r"allowed: backbone, batch_size, config_file, early_stopping"):
        SleapTrainHandler().validate_config({"epochs": 3})


def test_train_manifest_checks_names_before_any_byte_moves() -> None:
    handler = SleapTrainHandler(max_input_bytes=1000)
    handler.validate_inputs([InputFile("fly.pkg.slp", 500)], TINY)
    handler.validate_inputs([InputFile("fly.slp", 500), InputFile("cfg.yaml", 10)], {"max_epochs": 3})
    for manifest, name in [
        ([InputFile("fly.h5", 500)], "fly.h5"),
        ([InputFile("fly.slp", 5000)], "fly.slp"),
        ([InputFile("notes.txt", 5), InputFile("fly.slp", 5)], "notes.txt"),
        ([InputFile("cfg.yaml", 5)], None),
    ]:
        with pytest.raises(JobInputError) as info:
            handler.validate_inputs(manifest, {})
        assert info.value.name == name
    with pytest.raises(JobConfigError) as arch:  # the architecture comes from an uploaded config
        handler.validate_inputs(
            [InputFile("fly.slp", 5), InputFile("cfg.yaml", 5)], {"model_type": "centroid"}
        )
    assert arch.value.field == "model_type"
    with pytest.raises(JobInputError, match="set config 'labels'"):
        handler.validate_inputs([InputFile("a.slp", 5), InputFile("b.slp", 5)], {})
    handler.validate_inputs([InputFile("a.slp", 5), InputFile("b.slp", 5)], {"labels": "b.slp"})


def test_track_inputs_find_the_model_and_the_data() -> None:
    flat = ["best.ckpt", "training_config.yaml", "labels_gt.train.0.slp", "labels_pr.val.0.slp", "fly.slp"]
    assert track_inputs(flat, None) == ("", "fly.slp")
    nested = ["model/best.ckpt", "model/training_config.yaml", "model/labels_gt.val.0.slp", "movie.mp4"]
    assert track_inputs(nested, None) == ("model", "movie.mp4")
    assert track_inputs(["model.tar.gz", "fly.slp"], None) == ("model.tar.gz", "fly.slp")
    with pytest.raises(JobInputError, match="one trained model"):
        track_inputs(["fly.slp"], None)
    with pytest.raises(JobInputError, match="no checkpoint"):
        track_inputs(["training_config.yaml", "fly.slp"], None)
    with pytest.raises(JobInputError) as info:
        track_inputs([*flat, "run.sh"], None)
    assert info.value.name == "run.sh"
    with pytest.raises(JobInputError, match="nothing to predict on"):
        track_inputs(flat[:4], None)
    assert train_inputs(["x/fly.slp"], None, None) == ("x/fly.slp", None)


def test_train_build_refuses_a_non_hdf5_labels_file(tmp_path: Path) -> None:
    spec = JobSpec("j", "sleap-train", TINY, tmp_path)
    spec.inputs_dir.mkdir()
    (spec.inputs_dir / "fly.slp").write_text("not hdf5")
    with pytest.raises(JobInputError, match="not an HDF5 file"):
        SleapTrainHandler().build(spec)


def test_train_build_launch(tmp_path: Path) -> None:
    spec = JobSpec("j", "sleap-train", TINY, tmp_path)
    spec.inputs_dir.mkdir()
    (spec.inputs_dir / "fly.pkg.slp").write_bytes(HDF5_MAGIC + b"\0" * 10)
    command = SleapTrainHandler(gpus="1").build(spec)
    sets = dict(arg.removeprefix("--set=").split("=", 1) for arg in command.argv if arg.startswith("--set="))
    assert json.loads(sets["trainer_config.max_epochs"]) == 2
    assert json.loads(sets["trainer_config.train_steps_per_epoch"]) == 5
    assert json.loads(sets["model_config.backbone_config.unet.filters"]) == 8
    assert json.loads(sets["*.output_stride"]) == 4
    assert (
        "trainer_config.optimizer.lr" in sets and "model_config.backbone_config.unet.filters_rate" not in sets
    )
    channel = command.side_channel
    assert isinstance(channel, SleapZmqChannel)
    assert json.loads(sets["trainer_config.zmq.publish_port"]) == channel.publish_port
    assert json.loads(sets["trainer_config.zmq.controller_port"]) == channel.controller_port
    assert command.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert (
        f"--labels={spec.inputs_dir / 'fly.pkg.slp'}" in command.argv
        and "--model-type=single_instance" in command.argv
    )


def test_track_build_gathers_a_flat_model(tmp_path: Path) -> None:
    spec = JobSpec("j", "sleap-track", {}, tmp_path)
    spec.inputs_dir.mkdir()
    for name in ("best.ckpt", "training_config.yaml", "labels_gt.val.0.slp"):
        (spec.inputs_dir / name).write_bytes(HDF5_MAGIC)
    (spec.inputs_dir / "fly.slp").write_bytes(HDF5_MAGIC)
    command = SleapTrackHandler(device="cpu").build(spec)
    model = tmp_path / "model"
    assert f"--model={model}" in command.argv and f"--data={spec.inputs_dir / 'fly.slp'}" in command.argv
    assert sorted(p.name for p in model.iterdir()) == ["best.ckpt", "training_config.yaml"]


def test_model_archive_is_extracted_safely(tmp_path: Path) -> None:
    source = tmp_path / "src" / "run1"
    source.mkdir(parents=True)
    (source / "training_config.yaml").write_text("a: 1")
    (source / "best.ckpt").write_bytes(b"x")
    archive = tmp_path / "in" / "model.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source, arcname="run1")
    assert (
        prepare_model_dir(archive.parent, "model.tar.gz", tmp_path / "model") == tmp_path / "model" / "run1"
    )
    evil = tmp_path / "in" / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        info = tarfile.TarInfo("../../escape.txt")
        tf.addfile(info)
    with pytest.raises(JobInputError):
        prepare_model_dir(evil.parent, "evil.tar", tmp_path / "model2")
    assert not (tmp_path / "escape.txt").exists()


def test_zmq_messages_become_progress_and_metrics() -> None:
    zmq = ZmqProgress(epochs=2, steps_per_epoch=5)
    assert zmq.translate('{"event": "train_begin", "wandb_url": null}') is not None
    begin = zmq.translate(json.dumps({"event": "epoch_begin", "epoch": 1}))
    assert begin is not None and begin.progress == 0.5 and begin.metrics == {"epoch": 2}
    batch = zmq.translate(json.dumps({"event": "batch_end", "epoch": 1, "batch": 1, "logs": {"loss": 0.5}}))
    assert batch is not None and batch.progress == pytest.approx(0.7) and batch.metrics["loss"] == 0.5
    end = zmq.translate(json.dumps({"event": "epoch_end", "epoch": 1,
                                    "logs": {"loss": 0.4, "val/loss": 0.3, "train/lr": 1e-3, "bad": "x"}}))  # fmt: skip
    assert end is not None and end.progress == 1.0 and "val/loss=0.3" in end.message
    assert end.metrics == {"loss": 0.4, "val/loss": 0.3, "train/lr": 1e-3, "epoch": 2, "step": 1}
    for junk in ("not json", "[1]", '{"event": "epoch_end"}', '{"event": "epoch_end", "epoch": true}'):
        assert zmq.translate(junk) is None


def test_predict_progress_lines() -> None:
    line = PredictProgress().parse('{"n_processed": 10, "n_total": 40, "rate": 5.0, "eta": 6.0}')
    assert line is not None and line.progress == 0.25
    assert line.metrics == {"frames": 10, "eta_seconds": 6.0, "frames_per_second": 5.0}
    assert PredictProgress().parse('{"n_processed": 1, "n_total": 0}') is None


def test_describe_publishes_the_schema() -> None:
    described = SleapTrainHandler().describe()
    fields = described["config"]["fields"]
    assert fields["model_type"]["choices"] == ["single_instance", "centroid", "centered_instance", "bottomup"]
    assert fields["steps_per_epoch"]["optional"] is True and ".slp" in described["inputs"]
    assert json.loads(json.dumps(described)) == described
