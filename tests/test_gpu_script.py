"""The GPU entry point (scripts/train_gpu.sh) run on the CPU for a few seconds, as it will run on a lent GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from core.model.checkpoint import load_checkpoint


@pytest.mark.slow
def test_train_gpu_script_warm_starts_trains_evaluates_and_writes_results(tmp_path):
    """MINUTES of stream training from the shipped weights, then eval against the floors: weights,
    metrics JSON (model, inflation and oracle numbers) and a figure land in OUT_DIR."""
    env = {**os.environ, "PYTHON": sys.executable, "DEVICE": "cpu", "EVAL_COUNT": "2", "EVAL_STEPS": "2",
           "OMP_NUM_THREADS": "2"}  # fmt: skip
    out = tmp_path / "out"
    extra = ["--batch-size", "2", "--warmup", "1", "--log-every", "1", "--eval-samples", "2", "--eval-steps", "1"]
    result = subprocess.run(
        ["bash", "scripts/train_gpu.sh", "0.2", str(out), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"l0_abs_rel", "inflation_l0_abs_rel", "oracle_all_cd_l1"} <= set(metrics)
    assert (out / "eval.png").stat().st_size > 0
    model, _, info = load_checkpoint(out / "model.safetensors")
    assert model.cfg.silhouette_prior and info["step"] >= 1
    assert info["history"][-1]["checkpoint"] == "core/assets/wt-tiny.safetensors"
    assert info["train_config"]["minutes"] == 0.2 and info["train_config"]["stream_fraction"] == 1.0


@pytest.mark.slow
def test_train_gpu_script_trains_the_dynamic_model_on_clips_and_measures_it_beside_the_per_frame_floor(tmp_path):
    """MODE=dynamic: the shipped dynamic model warm-started, trained on streamed clips, measured by
    eval-clip (model, per-frame floor, inflation, perfect depth, stability) with a figure."""
    env = {**os.environ, "MODE": "dynamic", "PYTHON": sys.executable, "DEVICE": "cpu", "EVAL_COUNT": "2",
           "EVAL_STEPS": "2", "OMP_NUM_THREADS": "2"}  # fmt: skip
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", "scripts/train_gpu.sh", "0.1", str(out), "--batch-size", "1", "--warmup", "1", "--log-every", "1"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"model_all_cd_l1", "per-frame_all_cd_l1", "inflation_all_cd_l1", "model_stability"} <= set(metrics)
    assert (out / "eval.png").stat().st_size > 0
    model, _, info = load_checkpoint(out / "model.safetensors")
    assert model.cfg.temporal and info["step"] >= 1
    assert info["history"][-1]["checkpoint"] == "core/assets/wt-tiny-dynamic.safetensors"
    assert info["train_config"]["stream_frames"] == 4


def test_train_gpu_script_explains_its_arguments():
    result = subprocess.run(["bash", "scripts/train_gpu.sh"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr
    env = {**os.environ, "MODE": "scene"}
    result = subprocess.run(
        ["bash", "scripts/train_gpu.sh", "1", "out"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "MODE is object or dynamic" in result.stderr


def test_release_benchmark_checks_bf16_against_fp32_before_timing():
    """benchmarks/bench_official.py --check (the GPU run's first command) on the CPU with bf16 weights:
    one forward against the eager fp32 model of the same weights, a real deviation inside the tolerance."""
    import re

    result = subprocess.run(
        [sys.executable, "benchmarks/bench_official.py", "--configs", "tiny", "--dtype", "bfloat16", "--check",
         "--no-timing", "--device", "cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    deviation, tolerance = map(float, re.search(r"deviation ([\d.]+), within ([\d.]+)", result.stdout).groups())
    assert 0 < deviation <= tolerance, result.stdout
