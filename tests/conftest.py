"""Shared pytest fixtures: paths to the real Waymo files in ../shared and the oracle venv."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Before torch or numba load their OpenMP runtimes (see ops/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_WAYMO = REPO.parent / "shared" / "data" / "waymo"
sys.path.insert(0, str(REPO / "tests"))

from oracle import ORACLE_PYTHON, oracle_available  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if oracle_available():
        return
    skip = pytest.mark.skip(
        reason=f"needs the official Waymo package venv ({ORACLE_PYTHON} missing; run `make oracle-env`)")
    for item in items:
        if "oracle" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_waymo() -> Path:
    if not SHARED_WAYMO.is_dir():
        pytest.fail(f"{SHARED_WAYMO} is missing: the repository must sit beside ../shared")
    return SHARED_WAYMO


@pytest.fixture(scope="session")
def real_frame_path(shared_waymo) -> Path:
    return shared_waymo / "pvps_data_one_frame.tfrecord"
