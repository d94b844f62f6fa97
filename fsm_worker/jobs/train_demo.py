"""Built-in ``train-demo`` job: a tiny numpy MLP (or softmax regression) trained on an uploaded CSV.

Worker side: ``TrainDemoHandler`` validates the config, picks and checks the input CSV and builds
``python -u -m fsm_worker.jobs.train_demo --input ... --output-dir ...``. Job side: ``main`` trains,
reports one progress line per epoch and writes ``outputs/model.npz`` plus ``outputs/metrics.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from fsm_worker.jobs.config import check_config_keys, get_float, get_int, get_name
from fsm_worker.jobs.launch import Command
from fsm_worker.jobs.report import report_error, report_progress, report_result
from fsm_worker.jobs.spec import ErrorCode, JobConfigError, JobInputError, JobSpec

TRAIN_DEMO = "train-demo"
MODEL_FILE = "model.npz"
METRICS_FILE = "metrics.json"
HEADER_LIMIT = 64 * 1024

Array = NDArray[np.float64]


class DataError(ValueError):
    """The CSV cannot be used for training (reported as ``INPUT_INVALID``)."""


@attrs.frozen
class TrainDemoConfig:
    epochs: int = 20
    learning_rate: float = 0.01
    batch_size: int = 32
    seed: int = 0
    hidden_units: int = 32
    validation_split: float = 0.2
    label_column: str = "label"
    input: str | None = None

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> TrainDemoConfig:
        """Validate client config; raises ``JobConfigError`` naming the field."""
        check_config_keys(config, attrs.fields_dict(cls))
        d = cls()
        return cls(
            epochs=get_int(config, "epochs", d.epochs, 1, 10_000) or d.epochs,
            learning_rate=get_float(config, "learning_rate", d.learning_rate, 1e-6, 10.0),
            batch_size=get_int(config, "batch_size", d.batch_size, 1, 1_000_000) or d.batch_size,
            seed=get_int(config, "seed", d.seed, 0, 2**32 - 1) or 0,
            hidden_units=get_int(config, "hidden_units", d.hidden_units, 0, 1024) or 0,
            validation_split=get_float(config, "validation_split", d.validation_split, 0.0, 0.5),
            label_column=get_name(config, "label_column", d.label_column) or d.label_column,
            input=get_name(config, "input", None),
        )

    def argv(self) -> list[str]:
        """Typed values as ``--name=value`` options (the ``=`` keeps values from reading as options)."""
        return [
            f"--epochs={self.epochs}",
            f"--learning-rate={self.learning_rate!r}",
            f"--batch-size={self.batch_size}",
            f"--seed={self.seed}",
            f"--hidden-units={self.hidden_units}",
            f"--validation-split={self.validation_split!r}",
            f"--label-column={self.label_column}",
        ]


@attrs.frozen
class TrainDemoHandler:
    """The ``train-demo`` job type; ``threads`` caps BLAS threads (tiny matrices run best on one)."""

    python: str = sys.executable
    threads: int = 1

    def validate_config(self, config: Mapping[str, Any]) -> None:
        TrainDemoConfig.from_mapping(config)

    def estimate_minutes(self, config: Mapping[str, Any]) -> float:
        """About 0.05 s per epoch on 10k rows, plus start-up; a rough figure. Never raises."""
        try:
            epochs = TrainDemoConfig.from_mapping(config).epochs
        except JobConfigError:
            epochs = TrainDemoConfig().epochs
        return round(0.01 + epochs * 0.001, 4)

    def build(self, spec: JobSpec) -> Command:
        cfg = TrainDemoConfig.from_mapping(spec.config)
        source = select_input(spec.inputs_dir, cfg.input)
        check_header(source, cfg.label_column)
        argv = [self.python, "-u", "-m", "fsm_worker.jobs.train_demo", f"--input={source}",
                f"--output-dir={spec.outputs_dir}", *cfg.argv()]  # fmt: skip
        threads = str(self.threads)
        env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        return Command(argv, env)


def select_input(inputs_dir: Path, name: str | None) -> Path:
    """The named input, or the single ``*.csv`` among the inputs."""
    if name is not None:
        path = inputs_dir / name
        if not path.is_file() or path.is_symlink():
            raise JobInputError(name, "no such uploaded file")
        return path
    candidates = sorted(inputs_dir.glob("*.csv")) if inputs_dir.is_dir() else []
    candidates = [p for p in candidates if p.is_file() and not p.is_symlink()]
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise JobInputError(None, f"expected exactly one .csv input (found: {found}); set config 'input'")
    return candidates[0]


def check_header(path: Path, label_column: str) -> list[str]:
    """Read the header row: it must name ``label_column`` and at least one feature column."""
    try:
        with path.open("rb") as fh:
            first = fh.readline(HEADER_LIMIT).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobInputError(path.name, f"unreadable: {exc}") from None
    header = next(csv.reader(io.StringIO(first)), [])
    header = [h.strip() for h in header]
    if label_column not in header:
        raise JobInputError(path.name, f"header has no label column {label_column!r}")
    if len(header) < 2:
        raise JobInputError(path.name, "header needs at least one feature column besides the label")
    return header


# -- job side --------------------------------------------------------------------------------------


@attrs.frozen
class Dataset:
    features: Array
    labels: NDArray[np.int64]
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]


def _class_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def load_csv(path: Path, label_column: str) -> Dataset:
    """Parse the CSV: numeric features, any label values (at least two distinct classes)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [row for row in csv.reader(fh) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path.name}: unreadable CSV: {exc}") from None
    if len(rows) < 3:
        raise DataError(f"{path.name}: need a header and at least two data rows")
    header = [h.strip() for h in rows[0]]
    if label_column not in header:
        raise DataError(f"{path.name}: no label column {label_column!r}")
    li = header.index(label_column)
    feature_idx = [i for i in range(len(header)) if i != li]
    if not feature_idx:
        raise DataError(f"{path.name}: no feature columns")
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{path.name}: line {line_no} has {len(row)} fields, header has {len(header)}")
    body = rows[1:]
    try:
        features = np.array([[row[i] for i in feature_idx] for row in body], dtype=np.float64)
    except ValueError:
        for line_no, row in enumerate(body, start=2):
            for i in feature_idx:
                try:
                    float(row[i])
                except ValueError:
                    raise DataError(f"{path.name}: line {line_no}, column {header[i]!r}: "
                                    f"not a number: {row[i][:40]!r}") from None  # fmt: skip
        raise
    if not np.isfinite(features).all():
        raise DataError(f"{path.name}: features contain NaN or infinity")
    raw_labels = [row[li].strip() for row in body]
    classes = tuple(sorted(set(raw_labels), key=_class_key))
    if len(classes) < 2:
        raise DataError(f"{path.name}: label column {label_column!r} has fewer than two classes")
    index = {c: k for k, c in enumerate(classes)}
    labels = np.array([index[v] for v in raw_labels], dtype=np.int64)
    return Dataset(features, labels, classes, tuple(header[i] for i in feature_idx))


@attrs.define
class DemoModel:
    """Standardisation + dense layers (ReLU between them) + softmax."""

    weights: list[Array]
    biases: list[Array]
    mean: Array
    std: Array
    classes: tuple[str, ...]
    feature_names: tuple[str, ...] = ()

    def logits(self, x: Array) -> Array:
        h = (x - self.mean) / self.std
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h

    def predict_index(self, x: Array) -> NDArray[np.int64]:
        index: NDArray[np.int64] = np.argmax(self.logits(x), axis=1)
        return index

    def predict(self, x: Array) -> list[str]:
        """Class labels (as written in the CSV) for the rows of ``x``."""
        return [self.classes[i] for i in self.predict_index(x)]

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {f"w{i}": w for i, w in enumerate(self.weights)}
        arrays |= {f"b{i}": b for i, b in enumerate(self.biases)}
        with path.open("wb") as fh:  # np.savez would append ".npz" to a str path
            np.savez(fh, mean=self.mean, std=self.std, classes=np.array(self.classes),
                     feature_names=np.array(self.feature_names), **arrays)  # fmt: skip


def load_model(path: str | Path) -> DemoModel:
    """Load a ``model.npz`` written by ``train-demo``."""
    with np.load(path, allow_pickle=False) as data:
        layers = sum(1 for key in data.files if key.startswith("w"))
        return DemoModel(
            weights=[data[f"w{i}"] for i in range(layers)],
            biases=[data[f"b{i}"] for i in range(layers)],
            mean=data["mean"],
            std=data["std"],
            classes=tuple(str(c) for c in data["classes"]),
            feature_names=tuple(str(c) for c in data["feature_names"]),
        )


def _softmax_xent(logits: Array, y: NDArray[np.int64]) -> tuple[float, Array]:
    """Mean cross-entropy and its gradient w.r.t. the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(p[np.arange(n), y] + 1e-12).mean())
    p[np.arange(n), y] -= 1.0
    return loss, p / n


def train(data: Dataset, cfg: TrainDemoConfig) -> Iterator[tuple[int, dict[str, float], DemoModel]]:
    """Adam on mini-batches; yields ``(epoch, metrics, model)`` after every epoch."""
    rng = np.random.default_rng(cfg.seed)
    n, d = data.features.shape
    order = rng.permutation(n)
    n_val = int(n * cfg.validation_split) if n >= 10 else 0
    val, tr = order[:n_val], order[n_val:]
    x_tr, y_tr = data.features[tr], data.labels[tr]
    x_val, y_val = data.features[val], data.labels[val]
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std[std == 0] = 1.0
    sizes = [d, *([cfg.hidden_units] if cfg.hidden_units else []), len(data.classes)]
    weights = [rng.normal(0, np.sqrt(2.0 / a), size=(a, b)) for a, b in itertools.pairwise(sizes)]
    biases = [np.zeros(b) for b in sizes[1:]]
    model = DemoModel(weights, biases, mean, std, data.classes, data.feature_names)
    params = [*weights, *biases]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    beta1, beta2, step = 0.9, 0.999, 0
    xs_tr = (x_tr - mean) / std
    for epoch in range(1, cfg.epochs + 1):
        perm = rng.permutation(len(tr))
        loss_sum = correct = 0.0
        for start in range(0, len(tr), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            xb, yb = xs_tr[idx], y_tr[idx]
            acts = [xb]
            for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
                h = acts[-1] @ w + b
                acts.append(np.maximum(h, 0.0) if i < len(weights) - 1 else h)
            loss, grad = _softmax_xent(acts[-1], yb)
            loss_sum += loss * len(idx)
            correct += float((acts[-1].argmax(axis=1) == yb).sum())
            grads_w: list[Array] = [np.empty(0)] * len(weights)
            grads_b: list[Array] = [np.empty(0)] * len(weights)
            for i in range(len(weights) - 1, -1, -1):
                grads_w[i] = acts[i].T @ grad
                grads_b[i] = grad.sum(axis=0)
                if i:
                    grad = (grad @ weights[i].T) * (acts[i] > 0)
            step += 1
            lr = cfg.learning_rate * np.sqrt(1 - beta2**step) / (1 - beta1**step)
            for k, (p, g) in enumerate(zip(params, [*grads_w, *grads_b], strict=True)):
                m1[k] = beta1 * m1[k] + (1 - beta1) * g
                m2[k] = beta2 * m2[k] + (1 - beta2) * g * g
                p -= lr * m1[k] / (np.sqrt(m2[k]) + 1e-8)
        metrics = {"epoch": epoch, "loss": loss_sum / len(tr), "accuracy": correct / len(tr)}
        if n_val:
            val_loss, _ = _softmax_xent(model.logits(x_val), y_val)
            metrics["val_loss"] = val_loss
            metrics["val_accuracy"] = float((model.predict_index(x_val) == y_val).mean())
        yield epoch, {k: round(v, 5) for k, v in metrics.items()}, model


def _parse_args(argv: list[str] | None) -> tuple[Path, Path, TrainDemoConfig]:
    d = TrainDemoConfig()
    p = argparse.ArgumentParser(prog="python -m fsm_worker.jobs.train_demo", description=__doc__)
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--hidden-units", type=int, default=d.hidden_units)
    p.add_argument("--validation-split", type=float, default=d.validation_split)
    p.add_argument("--label-column", default=d.label_column)
    a = p.parse_args(argv)
    cfg = TrainDemoConfig(a.epochs, a.learning_rate, a.batch_size, a.seed, a.hidden_units,
                          a.validation_split, a.label_column)  # fmt: skip
    return a.input, a.output_dir, cfg


def main(argv: list[str] | None = None) -> int:
    source, out_dir, cfg = _parse_args(argv)
    began = time.monotonic()
    try:
        data = load_csv(source, cfg.label_column)
    except DataError as exc:
        report_error(ErrorCode.INPUT_INVALID, str(exc))
        print(f"train-demo: {exc}", file=sys.stderr)
        return 2
    rows, features = data.features.shape
    report_progress(0.0, f"loaded {rows} rows, {features} features, {len(data.classes)} classes")
    history: list[dict[str, float]] = []
    model: DemoModel | None = None
    for epoch, metrics, trained in train(data, cfg):
        model = trained
        history.append(metrics)
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "epoch")
        report_progress(epoch / cfg.epochs, f"epoch {epoch}/{cfg.epochs} {shown}", metrics)
    assert model is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / MODEL_FILE)
    final = {k: v for k, v in history[-1].items() if k != "epoch"}
    summary = {"final": final, "history": history, "rows": rows, "features": features,
               "classes": list(data.classes), "config": attrs.asdict(cfg),
               "seconds": time.monotonic() - began}  # fmt: skip
    (out_dir / METRICS_FILE).write_text(json.dumps(summary, indent=2))
    report_result(MODEL_FILE, final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
