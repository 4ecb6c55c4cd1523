"""The shipped checkpoint: our own format, small enough to ship, and still as accurate as the README
says on held-out objects (tests/data/heldout: the first shard of the validation split, seed 2)."""

from __future__ import annotations

import json

import pytest
from conftest import DATA

from core.assets import SHIPPED_CHECKPOINT
from core.data.shards import ShardReader
from core.model.checkpoint import read_metadata
from core.model.loading import load_model
from core.sampling import SampleConfig
from core.train.evaluate import evaluate_model


def test_shipped_checkpoint_is_ours_and_fits_the_budget():
    info = json.loads(read_metadata(SHIPPED_CHECKPOINT)["info"])
    assert info["command"].startswith("python -m core train") and info["train_config"]["steps"] == info["step"]
    assert SHIPPED_CHECKPOINT.stat().st_size < 50 * 2**20


@pytest.mark.slow
def test_shipped_model_holds_its_accuracy_on_held_out_objects():
    """Visible depth close to the truth, and the hidden layers add geometry that layer 0 alone lacks."""
    model, normalization, _ = load_model(SHIPPED_CHECKPOINT, "cpu")
    metrics = evaluate_model(
        model, normalization, ShardReader(DATA / "heldout"), list(range(8)), SampleConfig(steps=10)
    )
    assert metrics["l0_abs_rel"] < 0.1, metrics  # 0.064 when shipped (0.085 on 256 held-out objects)
    assert metrics["all_cd_l1"] < metrics["layer0_cd_l1"], metrics
    assert metrics["all_f@0.05"] > metrics["layer0_f@0.05"], metrics
