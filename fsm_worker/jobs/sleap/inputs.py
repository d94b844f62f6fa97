"""Which uploaded files a SLEAP job uses, checked from names alone (the request's manifest) or on disk."""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from fsm_worker.jobs.spec import JobInputError
from fsm_worker.protocol.messages import InputFile

LABELS_SUFFIXES = (".slp", ".pkg.slp")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".h5")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MODEL_CONFIGS = ("training_config.yaml", "training_config.json")
#: Files of a sleap-nn model directory besides its config and checkpoints (uploaded flat with it).
MODEL_FILE_PREFIXES = ("initial_config.", "training_log.", "labels_gt.", "labels_pr.", "metrics.")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _has_suffix(name: str, suffixes: Iterable[str]) -> bool:
    return name.lower().endswith(tuple(suffixes))


def pick(candidates: Sequence[str], wanted: str | None, kind: str, field: str) -> str | None:
    """The one candidate (or the one ``wanted`` names); ``None`` when there is none and none is wanted."""
    if wanted is not None:
        matches = [c for c in candidates if c == wanted or PurePosixPath(c).name == wanted]
        if len(matches) != 1:
            raise JobInputError(wanted, f"config {field!r} names no single uploaded {kind}")
        return matches[0]
    if len(candidates) > 1:
        raise JobInputError(None, f"several {kind}s ({', '.join(sorted(candidates))}); set config {field!r}")
    return candidates[0] if candidates else None


def train_inputs(names: Sequence[str], labels: str | None, config_file: str | None) -> tuple[str, str | None]:
    """(labels file, sleap-nn config or None) among ``names``; anything else is refused by name."""
    for item in names:
        if not _has_suffix(item, (*LABELS_SUFFIXES, *CONFIG_SUFFIXES)):
            raise JobInputError(
                item, "not a SLEAP labels file (.slp, .pkg.slp) or a sleap-nn config (.yaml, .yml, .json)"
            )
    chosen = pick(
        [n for n in names if _has_suffix(n, LABELS_SUFFIXES)], labels, "labels file (.slp)", "labels"
    )
    if chosen is None:
        raise JobInputError(None, "no labels file (.slp or .pkg.slp) uploaded")
    configs = [n for n in names if _has_suffix(n, CONFIG_SUFFIXES)]
    return chosen, pick(configs, config_file, "sleap-nn config", "config_file")


def _model_file(name: str, model_dir: str | None) -> bool:
    path = PurePosixPath(name)
    if model_dir:  # a nested upload: everything in the model's directory belongs to the model
        return path.parent.as_posix() == model_dir or path.is_relative_to(model_dir)
    return path.suffix == ".ckpt" or path.name in MODEL_CONFIGS or path.name.startswith(MODEL_FILE_PREFIXES)


def track_inputs(names: Sequence[str], data: str | None) -> tuple[str, str]:
    """(model reference: an archive or the model's directory, ``""`` for the top level; data file)."""
    archives = [n for n in names if _has_suffix(n, ARCHIVE_SUFFIXES)]
    configs = [n for n in names if PurePosixPath(n).name in MODEL_CONFIGS]
    if len(archives) + len({PurePosixPath(c).parent for c in configs}) != 1:
        raise JobInputError(None, "expected one trained model: its directory's files "
                                  "(training_config.yaml and best.ckpt) or one .zip/.tar archive")  # fmt: skip
    if archives:
        model, model_dir = archives[0], None
    else:
        parent = PurePosixPath(configs[0]).parent.as_posix()
        model = model_dir = "" if parent == "." else parent
        if not any(PurePosixPath(n).suffix == ".ckpt" and _model_file(n, model_dir) for n in names):
            raise JobInputError(configs[0], "the model has no checkpoint (best.ckpt) beside it")
    rest = [n for n in names if n != model and not (model_dir is not None and _model_file(n, model_dir))]
    for item in rest:
        if not _has_suffix(item, (*LABELS_SUFFIXES, *VIDEO_SUFFIXES)):
            raise JobInputError(item, "not a model file, a SLEAP labels file (.slp) or a video")
    chosen = pick(rest, data, "labels file or video", "data")
    if chosen is None:
        raise JobInputError(None, "nothing to predict on: upload an .slp or a video beside the model")
    return model, chosen


def check_names(manifest: Sequence[InputFile], max_bytes: int) -> None:
    for item in manifest:
        if item.size > max_bytes:
            raise JobInputError(item.name, f"{item.size} bytes is over the job type's limit of {max_bytes}")
        if item.size == 0:
            raise JobInputError(item.name, "is empty")


def check_hdf5(path: Path) -> Path:
    """An ``.slp`` is HDF5: refuse anything else before sleap-nn spends seconds importing torch."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(HDF5_MAGIC))
    except OSError as error:
        raise JobInputError(path.name, f"unreadable: {error}") from None
    if head != HDF5_MAGIC:
        raise JobInputError(path.name, "not an HDF5 file, so not a SLEAP labels file")
    return path


def read_max_epochs(config: Path) -> int | None:
    """``trainer_config.max_epochs`` of an uploaded sleap-nn config, if it can be read cheaply."""
    try:
        import yaml

        value = yaml.safe_load(config.read_text(encoding="utf-8"))["trainer_config"]["max_epochs"]
    except Exception:
        return None
    return value if isinstance(value, int) and value > 0 else None


def _extract(archive: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                dest = (target / member.filename).resolve()
                if not dest.is_relative_to(target.resolve()):
                    raise JobInputError(archive.name, f"unsafe path in archive: {member.filename!r}")
            zf.extractall(target)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(target, filter="data")


def prepare_model_dir(inputs_dir: Path, model: str, target: Path) -> Path:
    """The directory sleap-nn loads: the extracted archive, the uploaded directory, or a flat upload
    gathered into ``target`` (hard links, so its ``.slp`` copies cannot pass for the data)."""
    source = inputs_dir / model
    if model and source.is_file():
        try:
            _extract(source, target)
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as error:
            raise JobInputError(model, f"unreadable archive: {error}") from None
        found = sorted(p.parent for name in MODEL_CONFIGS for p in target.rglob(name))
        if not found:
            raise JobInputError(model, "the archive holds no training_config.yaml")
        return found[0]
    if model:
        return source
    target.mkdir(parents=True, exist_ok=True)
    for path in inputs_dir.iterdir():
        if path.is_file() and (path.suffix in (".ckpt", ".yaml", ".json")):
            try:
                os.link(path, target / path.name)
            except OSError:
                shutil.copy2(path, target / path.name)
    return target
