"""Job side of ``sleap-train`` / ``sleap-track`` (runs in the job's process, where torch may be imported).

``python -u -m fsm_worker.jobs.sleap.job train --labels L --output-dir O --run-name R [--base-config C]
[--model-type T --backbone B] [--set KEY=JSON ...]`` writes the full sleap-nn config to ``sleap_config.yaml``
in the work directory and runs ``sleap-nn train`` on it in this process. ``... job track --data D --model M
--output P [--device cpu]`` runs ``sleap-nn predict``. Both first apply ``torchvision_fix``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fsm_worker.jobs.report import report_error, report_result
from fsm_worker.jobs.sleap.torchvision_fix import import_torchvision

CONFIG_FILE = "sleap_config.yaml"


def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=JSON, got {text!r}")
    return key, json.loads(value)


def build_config(args: argparse.Namespace) -> Any:
    """The full sleap-nn config: the uploaded one, or one generated for ``model_type``/``backbone``."""
    from omegaconf import OmegaConf

    if args.base_config is not None:
        config = OmegaConf.load(args.base_config)
    else:
        from sleap_nn.config.get_config import get_data_config, get_model_config, get_trainer_config
        from sleap_nn.config.training_job_config import TrainingJobConfig

        job = TrainingJobConfig(
            data_config=get_data_config(train_labels_path=[str(args.labels)]),
            model_config=get_model_config(backbone_config=args.backbone, head_configs=args.model_type),
            trainer_config=get_trainer_config(),
        )
        config = job.to_sleap_nn_cfg()
    OmegaConf.set_struct(config, False)
    settings = dict(args.set or [])
    settings["data_config.train_labels_path"] = [str(args.labels)]
    settings["trainer_config.ckpt_dir"] = str(args.output_dir)
    settings["trainer_config.run_name"] = args.run_name
    settings["trainer_config.save_ckpt"] = True
    for key, value in settings.items():
        if key.startswith("*"):  # "*.output_stride": every head's confmaps/pafs of the chosen model type
            _set_heads(config, key[2:], value)
        else:
            OmegaConf.update(config, key, value, merge=True, force_add=True)
    return config


def _set_heads(config: Any, leaf: str, value: Any) -> None:
    heads = config.model_config.head_configs
    for head in heads.values():
        if head is None:
            continue
        for part in head.values():
            if part is not None and leaf in part:
                part[leaf] = value


def train(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    try:
        config = build_config(args)
    except Exception as error:  # an uploaded config sleap-nn cannot read
        report_error("INPUT_INVALID", f"sleap-nn config: {type(error).__name__}: {error}")
        return 2
    path = Path.cwd() / CONFIG_FILE
    path.write_text(OmegaConf.to_yaml(config), encoding="utf-8")
    rc = _sleap_nn(["train", "--config", str(path)])
    model = args.output_dir / args.run_name
    if (model / "best.ckpt").is_file():
        report_result(f"{args.run_name}/best.ckpt", final_metrics(model / "training_log.csv"))
    return rc


def final_metrics(log_csv: Path) -> dict[str, float]:
    """The last row of sleap-nn's ``training_log.csv`` (numbers only)."""
    import csv

    try:
        with log_csv.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return {}
    out: dict[str, float] = {}
    for key, value in (rows[-1] if rows else {}).items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    if "epoch" in out:
        out["epoch"] += 1  # sleap-nn's log counts epochs from 0
    return dict(list(out.items())[:30])


def track(args: argparse.Namespace) -> int:
    argv = ["predict", "-i", str(args.data), "-m", str(args.model), "-o", str(args.output), "--gui"]
    rc = _sleap_nn([*argv, "--device", args.device, "--batch_size", str(args.batch_size)])
    if rc == 0 and args.output.is_file():
        report_result(args.output.name)
    return rc


def _sleap_nn(argv: list[str]) -> int:
    from sleap_nn.cli import cli

    try:
        cli.main(args=argv, prog_name="sleap-nn", standalone_mode=False)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except KeyboardInterrupt:
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsm_worker.jobs.sleap.job")
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train")
    t.add_argument("--labels", type=Path, required=True)
    t.add_argument("--output-dir", type=Path, required=True)
    t.add_argument("--run-name", default="model")
    t.add_argument("--base-config", type=Path)
    t.add_argument("--model-type", default="single_instance")
    t.add_argument("--backbone", default="unet")
    t.add_argument("--set", type=_setting, action="append")
    p = commands.add_parser("track")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args(argv)
    import_torchvision()
    return train(args) if args.command == "train" else track(args)


if __name__ == "__main__":
    sys.exit(main())
