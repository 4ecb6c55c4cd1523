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
    from .options import config_from_args

    cfg = config_from_args(GenerateConfig, args)
    n = generate(cfg)
    print(f"wrote {n} samples to {cfg.out}")
    if args.preview:
        path = Path(cfg.out) / "preview.png"
        preview_sheet(ShardReader(cfg.out), path)
        print(f"preview: {path}")


def _train(args: argparse.Namespace) -> None:
    from .options import config_from_args
    from .train.loop import TrainConfig, train

    path = train(config_from_args(TrainConfig, args))
    print(f"checkpoint: {path}")


def _train_surface(args: argparse.Namespace) -> None:
    from .options import config_from_args
    from .train.surface import SurfaceTrainConfig, train_surface

    train_surface(config_from_args(SurfaceTrainConfig, args))


def _eval(args: argparse.Namespace) -> None:
    import json

    from .data.shards import ShardReader
    from .inference import pick_device
    from .model.loading import load_model
    from .train.evaluate import comparison_table, evaluate_model, prediction_figure

    model, normalization, card = load_model(args.checkpoint, pick_device(args.device))
    reader = ShardReader(args.data)
    indices = list(range(min(args.count, len(reader))))
    cfg = card.sample_config(steps=args.steps, **anchor_setting(args))
    metrics = evaluate_model(model, normalization, reader, indices, cfg, args.seed)
    print(comparison_table(metrics, Path(args.checkpoint).name, reader.mode))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=1))
    if args.figure:
        prediction_figure(model, normalization, reader, indices[:4], args.figure, cfg, args.seed)
        print(f"figure: {args.figure}")


def _eval_clip(args: argparse.Namespace) -> None:
    import json

    from .assets import default_checkpoint
    from .inference import pick_device
    from .model.loading import load_model
    from .train.evaluate_clip import clip_figure, clip_table, eval_clips, evaluate_clips, shard_clips

    device = pick_device(args.device)
    model, normalization, card = load_model(args.checkpoint or default_checkpoint("dynamic"), device)
    floor, floor_normalization, floor_card = load_model(args.floor or default_checkpoint("object"), device)
    floor_cfg = floor_card.sample_config(steps=args.steps)
    predictors = {
        "model": (model, normalization, card.sample_config(steps=args.steps), True),
        "per-frame": (floor, floor_normalization, floor_cfg, True),
        "per-frame, seed per frame": (floor, floor_normalization, floor_cfg, False),
    }
    names = [f"model: {card.name}", f"per-frame: {floor_card.name}"]
    layers = max(model.cfg.num_layers, floor.cfg.num_layers)
    if args.data:
        clips = shard_clips(args.data, args.clips, layers)
        source = f"{len(clips)} clips of {clips[0][0]['foreground'].shape[1]} frames from {args.data}"
    else:
        clips = eval_clips(args.clips, args.frames, args.seed, args.split, layers)
        source = f"{args.clips} clips of {args.frames} frames, {args.split} families, seed {args.seed}"
    metrics = evaluate_clips(predictors, clips, args.seed)
    print(f"{source}, {args.steps} steps")
    print(clip_table(metrics, list(predictors)))
    print("columns: " + "; ".join(names))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args) | {"func": None}, "metrics": metrics}, indent=1))
    if args.figure:  # the first still clip and the first moving one
        clip_figure(predictors, [clips[0][0], clips[-1][0]], args.figure, args.seed)
        print(f"figure: {args.figure}")


def _info(args: argparse.Namespace) -> None:
    from .model.cost import model_summary
    from .model.wtdit import CONFIGS, build_config

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


def non_negative_float(text: str) -> float:
    """argparse type: a finite number of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value


def anchor_time(text: str) -> float | str:
    """argparse type: "off" or a time in [0, 1)."""
    if text == "off":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a time in [0, 1) nor 'off'") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a time in [0, 1) or 'off', got {text}")
    return value


def anchor_setting(args: argparse.Namespace) -> dict:
    """The sampler's anchor as `--anchor` asks ({} keeps the model's own)."""
    if args.anchor is None:
        return {}
    return {"anchor": None if args.anchor == "off" else args.anchor}


ANCHOR_HELP = (
    "object mode: the time at which the visible layer restarts from the inflated silhouette, placed like the "
    "model's first guess ('off': plain sampling from noise; default: the model's own, 0.15 for ours, off for the "
    "released models)"
)


def output_file(text: str) -> Path:
    """argparse type: a file path to write (not an existing folder)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name, e.g. {path / 'trace.npz'}")
    return path


def _trace(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .assets import default_checkpoint
    from .geometry.far_limit import DEFAULT_SCENE_FACTOR
    from .imageio import read_image, with_mask
    from .inference import pick_device, trace_image
    from .model.loading import load_model

    if args.mode == "dynamic":
        _trace_clip(args)
        return
    rgba = read_image(args.image)
    if args.mask:
        rgba = with_mask(rgba, read_image(args.mask))
    far = args.far_limit if args.far_limit is not None else DEFAULT_SCENE_FACTOR if args.mode == "scene" else 0.0
    device = pick_device(args.device)
    model, normalization, card = load_model(args.checkpoint or default_checkpoint(args.mode), device)
    cfg = card.sample_config(steps=args.steps, solver=args.solver, **anchor_setting(args))
    with tqdm(total=cfg.steps, desc="trace", unit="step") as bar:
        result = trace_image(
            model,
            normalization,
            rgba,
            args.mode,
            cfg,
            args.seed,
            args.samples,
            on_step=lambda step: bar.update(1),
            framing=card.scene_framing if args.mode == "scene" else None,
            edge_filter_strength=args.edge_filter,
            far_limit_factor=far,
        )
    result.save(args.out)
    print(
        f"wrote {args.out}: {result.num_layers} layers at {result.width}×{result.height}, "
        f"{int(result.valid.sum())} points (edge filter {args.edge_filter:g}, far limit {far:g}), "
        f"fx={result.intrinsics[0, 0]:.1f}px"
    )


def _trace_clip(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .assets import default_checkpoint
    from .clip import read_clip, trace_clip, window_starts
    from .inference import pick_device
    from .model.loading import load_model

    frames = read_clip(args.image)
    model, normalization, card = load_model(args.checkpoint or default_checkpoint("dynamic"), pick_device(args.device))
    if card.mode != "dynamic":
        print(
            f"{card.name} is a single-image model ({card.mode}): each frame is traced on its own and scaled to "
            "agree with the one before"
        )
    cfg = card.sample_config(steps=args.steps, solver=args.solver)
    runs = len(frames) if card.mode != "dynamic" else len(window_starts(len(frames)))
    with tqdm(total=runs * cfg.steps, desc="trace", unit="step") as bar:
        clip = trace_clip(
            model,
            normalization,
            frames,
            cfg,
            args.seed,
            on_step=lambda frame, step: bar.update(1),
            framing=card.scene_framing,
            edge_filter_strength=args.edge_filter,
        )
    clip.save(args.out)
    T, L, H, W = clip.valid.shape
    print(
        f"wrote {args.out}: {T} frames × {L} layers at {W}×{H}, {int(clip.valid.sum())} points, "
        f"fx={clip.intrinsics[0, 0]:.1f}px"
    )


def _solid(args: argparse.Namespace) -> None:
    import time

    from .export import mesh_format, write_mesh
    from .geometry.occupancy import project_to_pixels
    from .geometry.solid import solid_mesh
    from .layered import LayeredPointMap

    mesh_format(args.out)  # an unknown suffix fails before the work
    lpm = LayeredPointMap.load(args.trace)
    t0 = time.perf_counter()
    vertices, faces, layer = solid_mesh(lpm.points, lpm.valid, lpm.intrinsics, args.voxel_size, args.max_faces)
    pixel, _ = project_to_pixels(vertices, lpm.intrinsics, lpm.height, lpm.width)
    write_mesh(args.out, vertices, faces, layer, pixel, lpm.image, name="wt_solid")
    print(f"wrote {args.out}: {len(faces):,} faces, {len(vertices):,} vertices in {time.perf_counter() - t0:.2f} s")


def _bank(args: argparse.Namespace) -> None:
    from .data.bank import export_bank

    n = export_bank(args.out, args.count, args.seed, args.assets, args.max_faces)
    print(f"wrote {n} meshes to {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB)")


def _convert(args: argparse.Namespace) -> None:
    import torch

    from .model.official import convert_official

    release = convert_official(
        args.checkpoint,
        args.out,
        {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype],
    )
    print(f"wrote {args.out}: official {release}, {Path(args.out).stat().st_size / 1e9:.2f} GB")


def build_parser() -> argparse.ArgumentParser:
    from .data.generate import GenerateConfig
    from .data.motion import MOTIONS
    from .data.recipe import FAMILIES
    from .geometry.edges import BASE_REL_JUMP, DEFAULT_STRENGTH
    from .geometry.far_limit import DEFAULT_SCENE_FACTOR
    from .geometry.occupancy import DIVISIONS
    from .geometry.points import NORMALIZATIONS
    from .geometry.solid import MAX_FACES
    from .model.wtdit import CONFIGS
    from .options import add_options
    from .train.flow import LOSSES, SCHEDULES
    from .train.loop import TrainConfig
    from .train.surface import SurfaceTrainConfig

    parser = argparse.ArgumentParser(prog="python -m core", description="World Tracing core: data, training, tracing.")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="render ground-truth shards in headless Blender")
    add_options(g, GenerateConfig, choices={"mode": ("object", "scene"), "families": FAMILIES, "motion": MOTIONS})
    g.add_argument("--preview", action="store_true", help="also write preview.png (RGB and per-layer depth)")
    g.set_defaults(func=_generate, parser=g)

    t = sub.add_parser("trace", help="trace an image into a layered point map (.npz)")
    t.add_argument(
        "image",
        help="PNG or JPEG (alpha = foreground in object mode); dynamic mode: a folder of frames (sorted by name), "
        "an animated GIF/PNG/WebP/TIFF, or a video (with PyAV installed)",
    )
    t.add_argument("--out", required=True, type=output_file, help="output .npz: points, valid, intrinsics, image")
    t.add_argument("--checkpoint", help="model .safetensors (default: the shipped one)")
    t.add_argument("--steps", type=positive_int, default=20, help="sampler steps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--samples", type=positive_int, default=1, help="samples drawn in one batch (kept as samples_points)"
    )
    t.add_argument("--solver", choices=["euler", "heun"], default="euler")
    t.add_argument(
        "--mode",
        choices=["object", "scene", "dynamic"],
        default="object",
        help="dynamic: a clip in, (T, L, H, W, 3) out",
    )
    t.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    t.add_argument(
        "--edge-filter",
        type=non_negative_float,
        default=DEFAULT_STRENGTH,
        metavar="S",
        help="drop flying points between the surfaces of a depth edge: those more than "
        f"{BASE_REL_JUMP:g}/S in relative depth from both neighbours they lie between (0: off; larger: stricter)",
    )
    t.add_argument(
        "--mask",
        help="object mode: a mask image from any tool (white or opaque = the object), instead of the image's "
        "alpha or a keyed-out background; same size as the image",
    )
    t.add_argument(
        "--far-limit",
        type=non_negative_float,
        metavar="N",
        help="drop points beyond N × the median visible depth: sky and far background (0: off; default: "
        f"{DEFAULT_SCENE_FACTOR:g} in scene mode, off in object mode)",
    )
    t.add_argument("--anchor", type=anchor_time, metavar="T|off", help=ANCHOR_HELP)
    t.set_defaults(func=_trace)

    r = sub.add_parser("train", help="train WT-DiT on shards and/or the torch stream (runs under torchrun too)")
    add_options(
        r,
        TrainConfig,
        choices={"model": CONFIGS, "normalization": NORMALIZATIONS, "schedule": SCHEDULES, "loss": LOSSES},
        recipe=True,
    )
    r.set_defaults(func=_train, parser=r)

    u = sub.add_parser(
        "train-surface", help="train a checkpoint's anchor net alone (objects: SurfaceNet; scenes: DepthNet)"
    )
    add_options(u, SurfaceTrainConfig)
    u.set_defaults(func=_train_surface, parser=u)

    e = sub.add_parser("eval", help="metrics of a checkpoint on held-out shards")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True, help="held-out shard folder")
    e.add_argument("--count", type=int, default=256, help="samples evaluated")
    e.add_argument("--steps", type=int, default=20)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", help="also write the metrics as JSON")
    e.add_argument("--figure", help="also write a PNG of predictions against ground truth")
    e.add_argument("--device", default="auto")
    e.add_argument("--anchor", type=anchor_time, metavar="T|off", help=ANCHOR_HELP)
    e.set_defaults(func=_eval)

    c = sub.add_parser(
        "eval-clip", help="dynamic mode on streamed clips: per-frame metrics and stability beside the per-frame floor"
    )
    c.add_argument("--checkpoint", help="the model measured (default: the shipped dynamic model)")
    c.add_argument("--floor", help="single-image model of the per-frame floor (default: the shipped object model)")
    c.add_argument("--clips", type=positive_int, default=16, help="clips drawn: half still, half moving")
    c.add_argument("--frames", type=positive_int, default=4, help="frames per clip")
    c.add_argument("--data", help="clip shards rendered by Blender (`generate --frames T`) instead of streamed clips")
    c.add_argument("--split", choices=["seen", "unseen"], default="unseen", help="training or held-out shape families")
    c.add_argument(
        "--seed", type=int, default=10**7, help="the clips' seed (training streams draw seed + step, far below)"
    )
    c.add_argument("--steps", type=int, default=20)
    c.add_argument("--json", help="also write the metrics as JSON")
    c.add_argument(
        "--figure", help="also write a PNG of a still and a moving clip: depth per frame, model, floors, truth"
    )
    c.add_argument("--device", default="auto")
    c.set_defaults(func=_eval_clip)

    s = sub.add_parser("solid", help="one watertight mesh (.ply or .obj) of the solid a trace encloses")
    s.add_argument("trace", help="a `trace` .npz (layers 2k and 2k+1 are where each ray enters and leaves)")
    s.add_argument("--out", required=True, type=output_file, help="output mesh: .ply (with wt_layer) or .obj")
    s.add_argument(
        "--voxel-size", type=float, help=f"voxel edge, in scene units (default: bounding-box diagonal / {DIVISIONS})"
    )
    s.add_argument(
        "--max-faces", type=positive_int, default=MAX_FACES, help="coarser voxels until the mesh has at most this many"
    )
    s.set_defaults(func=_solid)

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
