"""Worker side of ``sleap-train`` and ``sleap-track``: config schemas, input checks and the launch.

Nothing here imports sleap-nn or torch; the job process does (``fsm_worker.jobs.sleap.job``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from fsm_worker.jobs.launch import Command
from fsm_worker.jobs.parsers import AnyOf, JsonLines, TqdmBar
from fsm_worker.jobs.schema import boolean, choice, describe_schema, integer, name, number, parse_config
from fsm_worker.jobs.sleap.inputs import (
    CONFIG_SUFFIXES,
    LABELS_SUFFIXES,
    check_hdf5,
    check_names,
    pick,
    prepare_model_dir,
    read_max_epochs,
    track_inputs,
    train_inputs,
)
from fsm_worker.jobs.sleap.predict_progress import PredictProgress
from fsm_worker.jobs.sleap.zmq_channel import SleapZmqChannel, ZmqProgress, free_port
from fsm_worker.jobs.spec import JobConfigError, JobSpec
from fsm_worker.protocol.messages import InputFile

SLEAP_TRAIN = "sleap-train"
SLEAP_TRACK = "sleap-track"
MODEL_TYPES = ("single_instance", "centroid", "centered_instance", "bottomup")
BACKBONES = ("unet", "unet_medium_rf", "unet_large_rf", "convnext")
RUN_NAME = "model"
PREDICTIONS = "predictions.slp"
#: Fields that shape the network: with an uploaded sleap-nn config they come from that file.
ARCHITECTURE_FIELDS = (
    "model_type",
    "backbone",
    "filters",
    "filters_rate",
    "max_stride",
    "output_stride",
    "sigma",
)


@attrs.frozen
class SleapTrainConfig:
    model_type: str = choice("single_instance", MODEL_TYPES, "sleap-nn head type")
    backbone: str = choice("unet", BACKBONES, "sleap-nn backbone")
    max_epochs: int = integer(100, 1, 10_000, "training epochs")
    batch_size: int = integer(4, 1, 512, "frames per batch")
    learning_rate: float = number(1e-4, 1e-7, 1.0, "Adam learning rate")
    steps_per_epoch: int | None = integer(None, 1, 1_000_000, "batches per epoch (default: the data's size)")
    validation_fraction: float = number(0.1, 0.0, 0.9, "share of labelled frames held out for validation")
    seed: int = integer(0, 0, 2**31 - 1, "random seed")
    filters: int | None = integer(None, 1, 512, "UNet base filters")
    filters_rate: float | None = number(None, 1.0, 4.0, "UNet filter growth per level")
    max_stride: int | None = integer(None, 2, 128, "UNet max stride (a power of two)")
    output_stride: int | None = integer(None, 1, 64, "confidence-map stride (a power of two)")
    sigma: float | None = number(None, 0.1, 100.0, "confidence-map spread in pixels")
    input_scale: float | None = number(None, 0.05, 1.0, "image scale before the network")
    early_stopping: bool = boolean(False, "stop when the validation loss plateaus")
    labels: str | None = name(None, "which uploaded .slp to train on (default: the only one)")
    config_file: str | None = name(
        None, "which uploaded sleap-nn config to start from (default: the only one)"
    )


def _check_strides(cfg: SleapTrainConfig) -> None:
    for field in ("max_stride", "output_stride"):
        value = getattr(cfg, field)
        if value is not None and value & (value - 1):
            raise JobConfigError(field, f"must be a power of two, got {value}")
    if cfg.max_stride and cfg.output_stride and cfg.output_stride > cfg.max_stride:
        raise JobConfigError("output_stride", "must not exceed max_stride")
    if cfg.backbone == "convnext" and (cfg.filters is not None or cfg.filters_rate is not None):
        raise JobConfigError("filters", "applies to the UNet backbones only")


def train_settings(cfg: SleapTrainConfig, sent: Mapping[str, Any], from_file: bool) -> dict[str, Any]:
    """Dotted sleap-nn config keys → values; with an uploaded config only the fields the client sent."""

    def keep(field: str) -> bool:
        return field in sent if from_file else getattr(cfg, field) is not None

    unet = f"model_config.backbone_config.{cfg.backbone}"
    table: dict[str, list[str]] = {
        "max_epochs": ["trainer_config.max_epochs"],
        "batch_size": [
            "trainer_config.train_data_loader.batch_size",
            "trainer_config.val_data_loader.batch_size",
        ],
        "learning_rate": ["trainer_config.optimizer.lr"],
        "steps_per_epoch": [
            "trainer_config.train_steps_per_epoch",
            "trainer_config.min_train_steps_per_epoch",
        ],
        "validation_fraction": ["data_config.validation_fraction"],
        "seed": ["trainer_config.seed"],
        "filters": [f"{unet}.filters"],
        "filters_rate": [f"{unet}.filters_rate"],
        "max_stride": [f"{unet}.max_stride"],
        "output_stride": [f"{unet}.output_stride", "*.output_stride"],
        "sigma": ["*.sigma"],
        "input_scale": ["data_config.preprocessing.scale"],
        "early_stopping": ["trainer_config.early_stopping.stop_training_on_plateau"],
    }
    return {key: getattr(cfg, field) for field, keys in table.items() if keep(field) for key in keys}


@attrs.frozen
class SleapTrainHandler:
    """``sleap-train``: an uploaded ``.slp``/``.pkg.slp`` (and optionally a sleap-nn config) → ``model/``.

    ``gpus`` sets ``CUDA_VISIBLE_DEVICES`` for the job (``None``: leave the worker's choice);
    ``accelerator`` is sleap-nn's ``trainer_accelerator``; ``max_input_bytes`` bounds each upload.
    """

    python: str = sys.executable
    gpus: str | None = None
    accelerator: str = "auto"
    data_workers: int = 0
    max_input_bytes: int = 50 * 1024**3

    def parse(self, config: Mapping[str, Any]) -> SleapTrainConfig:
        cfg = parse_config(SleapTrainConfig, config)
        _check_strides(cfg)
        return cfg

    def validate_config(self, config: Mapping[str, Any]) -> None:
        self.parse(config)

    def validate_inputs(self, manifest: Sequence[InputFile], config: Mapping[str, Any]) -> None:
        cfg = self.parse(config)
        _, config_file = train_inputs([f.name for f in manifest], cfg.labels, cfg.config_file)
        check_names(manifest, self.max_input_bytes)
        if config_file is not None:
            self._refuse_architecture(config)

    def _refuse_architecture(self, config: Mapping[str, Any]) -> None:
        for field in ARCHITECTURE_FIELDS:
            if field in config:
                raise JobConfigError(field, "comes from the uploaded sleap-nn config; set it there")

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        try:
            cfg = self.parse(config)
        except JobConfigError:
            cfg = SleapTrainConfig()
        steps = cfg.steps_per_epoch or 200
        return round(0.2 + cfg.max_epochs * steps * 0.05 / 60, 2)

    def describe(self) -> dict[str, Any]:
        return {"config": describe_schema(SleapTrainConfig), "inputs": [*LABELS_SUFFIXES, *CONFIG_SUFFIXES]}

    def build(self, spec: JobSpec) -> Command:
        cfg = self.parse(spec.config)
        names = [str(p.relative_to(spec.inputs_dir)) for p in spec.inputs_dir.rglob("*") if p.is_file()]
        labels_name, config_name = train_inputs(names, cfg.labels, cfg.config_file)
        labels = check_hdf5(spec.inputs_dir / labels_name)
        argv = [self.python, "-u", "-m", "fsm_worker.jobs.sleap.job", "train", f"--labels={labels}",
                f"--output-dir={spec.outputs_dir}", f"--run-name={RUN_NAME}"]  # fmt: skip
        epochs = cfg.max_epochs
        if config_name is not None:
            self._refuse_architecture(spec.config)
            argv.append(f"--base-config={spec.inputs_dir / config_name}")
            if "max_epochs" not in spec.config:
                epochs = read_max_epochs(spec.inputs_dir / config_name) or epochs
        else:
            argv += [f"--model-type={cfg.model_type}", f"--backbone={cfg.backbone}"]
        publish, controller = free_port(), free_port()
        settings = train_settings(cfg, spec.config, config_name is not None)
        settings |= {
            "trainer_config.trainer_accelerator": self.accelerator,
            "trainer_config.use_wandb": False,
            "trainer_config.enable_progress_bar": True,
            "trainer_config.train_data_loader.num_workers": self.data_workers,
            "trainer_config.val_data_loader.num_workers": self.data_workers,
            "trainer_config.zmq.publish_port": publish,
            "trainer_config.zmq.controller_port": controller,
        }
        argv += [f"--set={key}={json.dumps(value)}" for key, value in settings.items()]
        steps = cfg.steps_per_epoch if "steps_per_epoch" in spec.config or config_name is None else None
        channel = SleapZmqChannel(publish, controller, ZmqProgress(epochs, steps))
        env = {"MPLBACKEND": "Agg", "WANDB_MODE": "disabled"}
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus
        parser = AnyOf((JsonLines(), TqdmBar(epochs=epochs)))
        return Command(argv, env, progress=parser, side_channel=channel)


@attrs.frozen
class SleapTrackConfig:
    data: str | None = name(None, "which uploaded .slp or video to predict on (default: the only one)")
    batch_size: int = integer(4, 1, 512, "frames per inference batch")


@attrs.frozen
class SleapTrackHandler:
    """``sleap-track``: a trained model (its directory's files, or a .zip/.tar archive) plus an ``.slp`` or
    video → ``predictions.slp``."""

    python: str = sys.executable
    gpus: str | None = None
    device: str = "auto"
    max_input_bytes: int = 50 * 1024**3

    def validate_config(self, config: Mapping[str, Any]) -> None:
        parse_config(SleapTrackConfig, config)

    def validate_inputs(self, manifest: Sequence[InputFile], config: Mapping[str, Any]) -> None:
        cfg = parse_config(SleapTrackConfig, config)
        track_inputs([f.name for f in manifest], cfg.data)
        check_names(manifest, self.max_input_bytes)

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        return 0.5

    def describe(self) -> dict[str, Any]:
        return {"config": describe_schema(SleapTrackConfig), "inputs": ["model directory or archive", "data"]}

    def build(self, spec: JobSpec) -> Command:
        cfg = parse_config(SleapTrackConfig, spec.config)
        names = [str(p.relative_to(spec.inputs_dir)) for p in spec.inputs_dir.rglob("*") if p.is_file()]
        model_ref, data_name = track_inputs(names, cfg.data)
        model_dir = prepare_model_dir(spec.inputs_dir, model_ref, spec.workdir / "model")
        data = spec.inputs_dir / data_name
        if Path(data_name).suffix == ".slp":
            check_hdf5(data)
        argv = [self.python, "-u", "-m", "fsm_worker.jobs.sleap.job", "track", f"--data={data}",
                f"--model={model_dir}", f"--output={spec.outputs_dir / PREDICTIONS}", f"--device={self.device}",
                f"--batch-size={cfg.batch_size}"]  # fmt: skip
        env = {"MPLBACKEND": "Agg"}
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus
        return Command(argv, env, progress=AnyOf((PredictProgress(), JsonLines(), TqdmBar())))


__all__ = [
    "LABELS_SUFFIXES",
    "SLEAP_TRACK",
    "SLEAP_TRAIN",
    "SleapTrackConfig",
    "SleapTrackHandler",
    "SleapTrainConfig",
    "SleapTrainHandler",
    "pick",
]
