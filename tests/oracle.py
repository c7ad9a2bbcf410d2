"""Run code in the official Waymo package's venv (.venv-waymo-official), the cross-check oracle.

The oracle venv has TensorFlow 2.13 and `waymo-open-dataset-tf-2-12-0`; the main venv has neither.
Tests hand it arrays through an .npz file and get arrays back the same way:

    out = run_oracle("oracle_scripts/metrics.py", {"pred_boxes": ...})   # -> dict of arrays

The script receives two arguments (input .npz, output .npz) and must write the output file.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ORACLE_PYTHON = REPO / ".venv-waymo-official" / "bin" / "python"


def oracle_available() -> bool:
    return ORACLE_PYTHON.is_file() and (REPO / ".venv-waymo-official" / ".stamp").is_file()


def run_oracle(script: str | Path, inputs: dict, timeout: float = 600.0, env: dict | None = None) -> dict:
    script = Path(script)
    if not script.is_absolute():
        script = REPO / "tests" / script
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(inp, **inputs)
        full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        full_env.update(env or {})
        proc = subprocess.run([str(ORACLE_PYTHON), str(script), str(inp), str(out)],
                              capture_output=True, text=True, timeout=timeout, env=full_env)
        if proc.returncode != 0:
            raise RuntimeError(f"oracle script {script.name} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        with np.load(out, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
