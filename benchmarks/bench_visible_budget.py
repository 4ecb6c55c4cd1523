"""Where the object model's visible-layer error lies: the aligned AbsRel of the visible layer (the
metric of DESIGN.md §6, as `train-surface` scores it) for simple fronts, for oracles that borrow part
of the truth, and for a checkpoint's SurfaceNet, on held-out object shards.

    python benchmarks/bench_visible_budget.py --data data/val_unseen [--count 64] [--checkpoint P]

Rows (true camera and mask throughout):
  flat                 one depth everywhere (no relief at all)
  round inflation      the floor: the mask's distance transform as a round relief
  best thickness       oracle: the round relief scaled by whichever of 8 factors (¼–4×) suits each sample
  best plane           oracle: the plane (1, x/z, y/z) fitted to the true depth, i.e. the surface's tilt
  plane + inflation    oracle: the true depth fitted by that plane and the round relief together
  SurfaceNet           the checkpoint's learned relief (no sampling)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.data.shards import ShardReader
from core.geometry.points import pixel_rays
from core.geometry.silhouette import round_profile
from core.model.loading import load_model
from core.train.surface import aligned_abs_rel, aligned_front_error, surface_batch, surface_error

THICKNESS_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)


def fitted_front(batch: dict[str, torch.Tensor], with_relief: bool) -> torch.Tensor:
    """The front [B, H, W, 3] whose depth is the least-squares fit of the true depth over each
    sample's foreground by a plane in the ray coordinates (and the round relief, `with_relief`)."""
    points, foreground, K = batch["points"], batch["foreground"], batch["intrinsics"]
    rays = pixel_rays(K, *foreground.shape[1:])  # [B, H, W, 3]
    rho = round_profile(batch["distance"])[0]
    features = [torch.ones_like(rho), rays[..., 0], rays[..., 1]] + ([rho] if with_relief else [])
    basis = torch.stack(features, -1)  # [B, H, W, F]
    depth = torch.zeros_like(rho)
    for b in range(len(depth)):
        fg = foreground[b]
        solution = torch.linalg.lstsq(basis[b][fg], points[b, ..., 2][fg][:, None]).solution
        depth[b] = (basis[b] @ solution)[..., 0]
    return depth[..., None] * rays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="held-out object shard folder")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--checkpoint", default=str(ROOT / "core/assets/wt-tiny.safetensors"))
    args = parser.parse_args()
    reader = ShardReader(args.data)
    batch = surface_batch(reader, range(min(args.count, len(reader))))
    geometry = (batch["distance"], batch["points"], batch["foreground"], batch["intrinsics"])
    rho = round_profile(batch["distance"])[0]
    thickness = torch.stack([aligned_front_error(k * rho, *geometry) for k in THICKNESS_FACTORS])
    rows = {
        "flat": aligned_front_error(torch.zeros_like(rho), *geometry),
        "round inflation": aligned_front_error(rho, *geometry),
        "best thickness (oracle)": thickness.min(0).values,
        "best plane (oracle)": aligned_abs_rel(fitted_front(batch, False), batch["points"], batch["foreground"]),
        "plane + inflation (oracle)": aligned_abs_rel(fitted_front(batch, True), batch["points"], batch["foreground"]),
    }
    model, _, _ = load_model(args.checkpoint, "cpu")
    if model.surface is not None:
        with torch.no_grad():
            rows[f"SurfaceNet of {Path(args.checkpoint).name}"] = surface_error(model, batch)
    print(f"visible-layer aligned AbsRel on {len(rho)} samples of {args.data}")
    for name, errors in rows.items():
        print(f"  {name:<40} {float(errors.mean()):.4f}")


if __name__ == "__main__":
    main()
