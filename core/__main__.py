"""Command line: `python -m core <command> ...` from the repository root (see --help)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _generate(args: argparse.Namespace) -> None:
    from .data.generate import GenerateConfig, generate
    from .data.preview import preview_sheet
    from .data.shards import ShardReader

    workers = {"workers": args.workers} if args.workers else {}
    cfg = GenerateConfig(out=args.out, count=args.count, seed=args.seed, resolution=args.resolution, mode=args.mode,
                         layers=args.layers, assets=args.assets, shard_size=args.shard_size,
                         render_samples=args.render_samples, **workers)
    n = generate(cfg)
    print(f"wrote {n} samples to {cfg.out}")
    if args.preview:
        path = Path(cfg.out) / "preview.png"
        preview_sheet(ShardReader(cfg.out), path)
        print(f"preview: {path}")


def _train(args: argparse.Namespace) -> None:
    import json

    from .train import TrainConfig, train

    overrides = json.loads(args.model_overrides) if args.model_overrides else {}
    cfg = TrainConfig(data=args.data, out=args.out, val=args.val, model=args.model, model_overrides=overrides,
                      normalization=args.normalization, schedule=args.schedule, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, eval_every=args.eval_every,
                      save_every=args.save_every, seed=args.seed, device=args.device,
                      stream_fraction=args.stream_fraction, stream_bank=args.stream_bank, compile=args.compile)
    path = train(cfg)
    print(f"checkpoint: {path}")


def _eval(args: argparse.Namespace) -> None:
    import json

    from .checkpoint import load_checkpoint
    from .data.shards import ShardReader
    from .evaluate import evaluate_model, oracle_and_model_table, prediction_figure
    from .inference import pick_device
    from .sampling import SampleConfig

    model, normalization, _ = load_checkpoint(args.checkpoint, pick_device(args.device))
    reader = ShardReader(args.data)
    indices = list(range(min(args.count, len(reader))))
    metrics = evaluate_model(model, normalization, reader, indices, SampleConfig(steps=args.steps), args.seed)
    print(oracle_and_model_table(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=1))
    if args.figure:
        prediction_figure(model, normalization, reader, indices[:4], args.figure, SampleConfig(steps=args.steps), args.seed)
        print(f"figure: {args.figure}")


def _info(args: argparse.Namespace) -> None:
    from .model import CONFIGS, build_config
    from .profile import model_summary

    for name in args.configs or ["tiny", "small"]:
        if name not in CONFIGS:
            raise ValueError(f"unknown config {name!r}; choose from {', '.join(CONFIGS)}")
        print(model_summary(build_config(name)))


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def output_file(text: str) -> Path:
    """argparse type: a file path to write (not an existing folder)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name, e.g. {path / 'trace.npz'}")
    return path


def _trace(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .imageio import read_image
    from .inference import pick_device, trace_image
    from .sampling import SampleConfig
    from .weights import default_checkpoint, load_any_checkpoint

    rgba = read_image(args.image)
    device = pick_device(args.device)
    model, normalization, info = load_any_checkpoint(args.checkpoint or default_checkpoint(), device)
    cfg = SampleConfig(steps=args.steps, solver=args.solver)
    with tqdm(total=cfg.steps, desc="trace", unit="step") as bar:
        result = trace_image(model, normalization, rgba, args.mode, cfg, args.seed, args.samples,
                             on_step=lambda step: bar.update(1), framing=info.get("scene_framing") if args.mode == "scene" else None)
    result.save(args.out)
    print(f"wrote {args.out}: {result.num_layers} layers at {result.width}×{result.height}, "
          f"{int(result.valid.sum())} points, fx={result.intrinsics[0, 0]:.1f}px")


def _bank(args: argparse.Namespace) -> None:
    from .data.bank import export_bank

    n = export_bank(args.out, args.count, args.seed, args.assets, args.max_faces)
    print(f"wrote {n} meshes to {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")


def _convert(args: argparse.Namespace) -> None:
    import torch

    from .official import convert_official

    info = convert_official(args.checkpoint, args.out, {"bfloat16": torch.bfloat16, "float16": torch.float16,
                                                          "float32": torch.float32}[args.dtype])
    print(f"wrote {args.out}: {info['name']} ({info['mode']} model), {Path(args.out).stat().st_size / 1e9:.2f} GB")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="World Tracing core: data, training, tracing.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="render ground-truth shards in headless Blender")
    g.add_argument("--out", required=True, help="output folder (resumes if it already holds shards)")
    g.add_argument("--count", type=int, required=True, help="number of samples")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--resolution", type=int, default=128, help="square image side in pixels")
    g.add_argument("--mode", choices=["object", "scene"], default="object")
    g.add_argument("--layers", type=int, default=6, help="ray crossings kept per pixel (1-8)")
    g.add_argument("--assets", help="folder of .obj/.ply/.glb/.gltf/.blend meshes to mix in")
    g.add_argument("--workers", type=int, default=0, help="Blender processes (default: CPU cores)")
    g.add_argument("--shard-size", type=int, default=32)
    g.add_argument("--render-samples", type=int, default=32, help="Cycles samples per pixel")
    g.add_argument("--preview", action="store_true", help="also write preview.png (RGB and per-layer depth)")
    g.set_defaults(func=_generate)

    t = sub.add_parser("trace", help="trace an image into a layered point map (.npz)")
    t.add_argument("image", help="PNG or JPEG (alpha = foreground in object mode)")
    t.add_argument("--out", required=True, type=output_file, help="output .npz: points, valid, intrinsics, image")
    t.add_argument("--checkpoint", help="model .safetensors (default: the shipped one)")
    t.add_argument("--steps", type=positive_int, default=20, help="sampler steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--samples", type=positive_int, default=1, help="samples drawn in one batch (kept as samples_points)")
    t.add_argument("--solver", choices=["euler", "heun"], default="euler")
    t.add_argument("--mode", choices=["object", "scene"], default="object")
    t.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    t.set_defaults(func=_trace)

    r = sub.add_parser("train", help="train WT-DiT on shards (runs under torchrun too)")
    r.add_argument("--data", nargs="*", default=[], help="training shard folder(s)")
    r.add_argument("--stream-fraction", type=float, default=0.0, help="share of each batch from the torch stream (1: only)")
    r.add_argument("--stream-bank", help="mesh bank .npz for the stream (python -m core bank)")
    r.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    r.add_argument("--val", help="held-out shard folder")
    r.add_argument("--out", required=True, help="run folder (resumes if it holds state.safetensors)")
    r.add_argument("--model", default="tiny", help="named config")
    r.add_argument("--model-overrides", help='JSON of config fields, e.g. \'{"num_layers": 6}\'')
    r.add_argument("--normalization", choices=["zscore", "log_median"], default="zscore")
    r.add_argument("--schedule", default="mixed", help="mixed, per_layer, shared_mixture or logit_normal (ablation)")
    r.add_argument("--steps", type=int, default=10000)
    r.add_argument("--batch-size", type=int, default=16, help="per process")
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--warmup", type=int, default=500)
    r.add_argument("--eval-every", type=int, default=1000)
    r.add_argument("--save-every", type=int, default=500)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto")
    r.set_defaults(func=_train)

    e = sub.add_parser("eval", help="metrics of a checkpoint on held-out shards")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True, help="held-out shard folder")
    e.add_argument("--count", type=int, default=256, help="samples evaluated")
    e.add_argument("--steps", type=int, default=20)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", help="also write the metrics as JSON")
    e.add_argument("--figure", help="also write a PNG of predictions against ground truth")
    e.add_argument("--device", default="auto")
    e.set_defaults(func=_eval)

    b = sub.add_parser("bank", help="export random Blender object meshes for the torch stream")
    b.add_argument("--out", required=True, help="output .npz")
    b.add_argument("--count", type=int, default=64)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--assets", help="folder of .obj/.ply/.glb/.gltf/.blend meshes to mix in")
    b.add_argument("--max-faces", type=int, default=20000, help="skip scenes with more triangles")
    b.set_defaults(func=_bank)

    c = sub.add_parser("convert", help="rewrite an official model.pt as our .safetensors (config inside)")
    c.add_argument("checkpoint", help="official model.pt (read weights-only)")
    c.add_argument("--out", required=True, help="output .safetensors")
    c.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    c.set_defaults(func=_convert)

    i = sub.add_parser("info", help="parameters and FLOPs of named configs")
    i.add_argument("configs", nargs="*", help="config names (default: tiny small)")
    i.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:  # includes ImageError, CheckpointError
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
