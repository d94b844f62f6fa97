"""Fixtures of the integration tests (the `room` fixture is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsm_worker.jobs.sample_data import generate_sample_csv


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return generate_sample_csv(tmp_path / "data.csv", rows=3000, features=4, seed=3)
