"""Synthetic, well separated classification data for the demo and the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def generate_sample_csv(
    path: str | Path,
    rows: int = 10_000,
    features: int = 8,
    seed: int = 0,
    *,
    classes: int = 2,
    separation: float = 3.0,
    label_column: str = "label",
) -> Path:
    """Write a CSV (header ``f0..f{n-1},<label_column>``) of Gaussian blobs, one per class.

    Class centres are random directions scaled by ``separation`` (in units of the blobs' std), so the
    default data is close to linearly separable. Returns the path written.
    """
    if rows < 1 or features < 1 or classes < 2:
        raise ValueError("need rows >= 1, features >= 1 and classes >= 2")
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(classes, features))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centres = directions * separation
    labels = rng.integers(0, classes, size=rows)
    data = centres[labels] + rng.normal(size=(rows, features))
    header = ",".join([*(f"f{i}" for i in range(features)), label_column])
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = np.column_stack([data, labels])
    np.savetxt(out, table, delimiter=",", header=header, comments="", fmt=["%.5f"] * features + ["%d"])
    return out
