"""``make gpu-check`` at tiny size on the CPU, so the script cannot rot while no GPU runs it.

It runs as users run it (``python -m instantid.gpu_check``, its own process and
ComfyUI), merges into an existing results file, and reports sane values.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

PACK_DIR = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_at_tiny_size_and_merges(tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"device": "written by make bench", "step_ratio_full": 1.37}))
    # One thread: the check is about the script, and on a shared 2-core runner OpenMP spin-waits make
    # two threads several times slower than one.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "instantid.gpu_check", "--size", "tiny", "--latent", "8", "--rounds", "1",
                           "--out", str(out)], cwd=PACK_DIR, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "accuracy vs fp32" in proc.stdout and "written" in proc.stdout, proc.stdout
    data = json.loads(out.read_text())
    assert data["device"] == "written by make bench" and data["step_ratio_full"] == 1.37, "other results were overwritten"
    r = data["gpu_check"]
    assert "no GPU" in r["device"] and "model_channels 32" in r["topology"] and r["latent"].startswith("8x8")

    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        row = r["accuracy"][name]
        assert row["eps"] == torch.finfo(dtype).eps
        # Same bound as tests/test_real_setups.py: 32 eps of the output's max; the identity's effect is far above it.
        assert 0 < row["plain"] <= 32 * row["eps"] and 0 < row["full"] <= 32 * row["eps"], row
        assert row["identity_effect"] > 10 * row["full"], row

    steps = r["steps"]
    assert set(steps) == {"loaded", "partly_loaded", "fp8_weights"}
    for row in steps.values():
        assert set(row["step_seconds"]) == {"plain", "attention", "full"}
        assert all(0 < s < 60 for s in row["step_seconds"].values()), row
        assert all(math.isfinite(row[k]) and row[k] > 0 for k in ("ratio_attention", "ratio_full"))
        assert row["peak_device_bytes"] == {"plain": None, "attention": None, "full": None}  # no device memory on a CPU
    assert steps["loaded"]["weights"] == "float32" and steps["fp8_weights"]["weights"] == "float8_e4m3fn"
    assert {"SDXL", "ControlNet"} <= set(steps["partly_loaded"]["partly_loaded_models"])

    adapter = r["adapter"]
    assert adapter["weight_devices_after_sampling"] == ["cpu"] and adapter["in_memory_manager"] is False
    assert not any(d.startswith("float8") for d in adapter["weight_dtypes"])
    assert adapter["cached_identities"] == 1
    assert 0 < adapter["repeat_apply_seconds"] < adapter["first_apply_seconds"]
