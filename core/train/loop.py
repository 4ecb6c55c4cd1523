"""`python -m core train`: flow-matching training of WT-DiT on ground-truth shards.

One straight loop: set the learning rate, take a batch, loss, backward, clip, step, update the EMA,
log, validate, checkpoint. Runs as one process or under torchrun (DistributedDataParallel; gloo on
CPU, nccl on CUDA). The EMA weights are what ships; the full training state (model, EMA,
optimizer, step) lives in `state.safetensors` so a run resumes where it stopped.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save
from torch.nn.parallel import DistributedDataParallel

from ..atomic import write_atomic
from ..data.shards import ShardReader
from ..geometry.points import PointNormalization
from ..model.checkpoint import check_state_dict, save_checkpoint
from ..model.loading import make_card
from ..model.wtdit import WTDiT, build_config
from ..plots import line_plot
from ..precision import bf16_autocast
from .evaluate import evaluate_model, prediction_figure, validation_loss
from .flow import flow_loss


@dataclass
class TrainConfig:
    out: str  # run folder: logs, curves, checkpoints (resumes from its state.safetensors)
    data: list[str] = field(default_factory=list)  # shard folders for training (none: stream_fraction = 1)
    val: str | None = None  # held-out shard folder
    model: str = "tiny"  # named model config
    model_overrides: dict = field(default_factory=dict)  # config fields to change, e.g. {"num_layers": 6}
    normalization: str = "zscore"  # "zscore" (objects) or "log_median" (scenes)
    schedule: str = "mixed"  # noise schedule; "logit_normal" and the two phases alone are ablations
    loss: str = "absolute"  # endpoint error: "absolute" (network units) or "aligned" (shape after scale + z-shift)
    anchor_share: float = 0.0  # objects: share of samples whose visible layer starts from the placed silhouette
    steps: int = 10000  # optimizer steps
    batch_size: int = 16  # per process
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-5  # end of the cosine decay
    warmup: int = 500  # linear warm-up steps
    weight_decay: float = 0.01  # AdamW, matrices only
    grad_clip: float = 1.0  # max gradient norm
    ema_decay: float = 0.9995  # EMA of the weights (with a short warm-up)
    log_every: int = 20  # steps between log lines
    eval_every: int = 1000  # validation loss + sampled metrics
    eval_samples: int = 32  # held-out samples for the sampled metrics
    eval_steps: int = 10  # sampler steps in validation
    save_every: int = 500  # steps between checkpoints
    seed: int = 0  # data order, noise and initialisation
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cuda, mps or cpu
    stream_fraction: float = 0.0  # share of every batch made on the fly by the torch stream (1: stream only)
    stream_bank: str | None = None  # mesh bank for the stream (`python -m core bank`)
    stream_mode: str = "object"  # what the stream draws: "object" scenes, or "scene" (rooms and streets)
    stream_frames: int = 1  # frames per sample (streamed, and the shards'): > 1 trains a temporal model on clips
    frame_correlation: float = 0.0  # clips: ρ of the noise across frames (recorded; the model's sampler draws the same)
    compile: bool = False  # torch.compile the model (CUDA)
    init: str | None = None  # checkpoint to warm-start a new run from (fresh optimizer); its history is kept
    minutes: float = 0.0  # wall-time budget of this process: the LR decays by it and training stops there (0: none)


def get_lr(step: int, cfg: TrainConfig, time_used: float = 0.0) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.min_lr at cfg.steps, or earlier when the
    share `time_used` of the wall-time budget runs out first."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, max((step - cfg.warmup) / max(1, cfg.steps - cfg.warmup), time_used))
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def configure_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (biases, norms, embeddings, LayerScales decay-free)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=device.type == "cuda")


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)


# ----------------------------------------------------------------------------------------------
# Training state: one safetensors file (model/, ema/, optim/ tensors) + JSON metadata
# ----------------------------------------------------------------------------------------------


def save_state(
    path: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    cfg: TrainConfig,
    wall_s: float,
) -> None:
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim/{idx}/{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    meta = {
        "step": str(step),
        "wall_s": f"{wall_s:.1f}",
        "train_config": json.dumps(asdict(cfg)),
        "param_groups": json.dumps(opt["param_groups"]),
    }
    data = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=meta)
    write_atomic(path, lambda f: f.write(data))


def load_state(
    path: Path, model: torch.nn.Module, ema: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[int, float]:
    """Restore model, EMA and optimizer from `save_state`'s file; returns the step to continue from and
    the wall time the run has taken so far (seconds)."""
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    for prefix, module in (("model/", model), ("ema/", ema)):
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        check_state_dict(module, state, str(path))
        module.load_state_dict(state)
    opt_state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, idx, name = k.split("/", 2)
            opt_state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"]), float(meta.get("wall_s", 0.0))


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def training_batches(
    cfg: TrainConfig, data: ShardReader | None, model_cfg, device: torch.device, rank: int, step: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of cfg.batch_size: round(batch_size × stream_fraction) samples from the torch stream,
    the rest from the shards; seeded per rank and step so resumed and parallel runs see fresh data."""
    from ..data.stream import SceneStream, StreamConfig

    n_stream = round(cfg.batch_size * cfg.stream_fraction)
    n_shards = cfg.batch_size - n_stream
    seed = cfg.seed + 1000 * rank + step
    if n_shards and data is None:
        raise ValueError("a batch needs shard samples (stream_fraction < 1) but no shard folders were given")
    shards = data.batches(n_shards, seed=seed, num_layers=model_cfg.num_layers) if n_shards and data else None
    stream = (
        SceneStream(
            StreamConfig(
                model_cfg.image_size,
                model_cfg.num_layers,
                cfg.stream_bank,
                device=str(device),
                mode=cfg.stream_mode,
                frames=cfg.stream_frames,
            ),
            seed=seed,
        )
        if n_stream
        else None
    )
    while True:
        parts = ([next(shards)] if shards else []) + ([stream.batch(n_stream)] if stream else [])
        yield {k: torch.cat([p[k].to(device, non_blocking=True) for p in parts]) for k in parts[0]}


def warm_start(model: WTDiT, path: str, log: Callable[[str], object] = print) -> list[dict]:
    """Copy checkpoint `path`'s weights into the fresh `model` wherever names and shapes agree; returns
    its training record (its history, then its own info), which the new checkpoints carry on.

    A wider geometry projection (the silhouette prior's input columns) keeps the old columns and
    starts the new ones at zero; a model that gains the silhouette prior gets its output layer zeroed,
    so it starts exactly as the prior; a model that gains temporal blocks gets their residual scales
    zeroed, so it starts as the single-image model on every frame. Anything else that does not fit
    stays freshly initialised.
    """
    from ..model.checkpoint import load_checkpoint, ours_metadata

    source, _, _ = load_checkpoint(path)
    old, kept, fresh = source.state_dict(), 0, []
    gains_time = model.cfg.temporal and not source.cfg.temporal
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if gains_time and name.startswith("temporal_blocks."):
                continue  # fresh, reported once below
            w = old.get(name)
            if w is not None and w.shape == tensor.shape:
                tensor.copy_(w)
                kept += 1
            elif name == "geometry_proj.weight" and w is not None and w.shape[0] == tensor.shape[0]:
                tensor.zero_()[:, : w.shape[1]] = w
                kept += 1
            else:
                fresh.append(name)
        if model.cfg.silhouette_prior and not source.cfg.silhouette_prior:
            model.head.out.weight.zero_()
            model.head.out.bias.zero_()
            fresh.append("head.out (zeroed: the model starts as the silhouette prior)")
        if gains_time:
            for name, param in model.named_parameters():
                if name.startswith("temporal_blocks.") and name.endswith("gamma"):
                    param.zero_()  # LayerScale: the block adds nothing
            fresh.append("temporal blocks (residual scales zeroed: the model starts as the single-image one)")
    log(f"warm start from {path}: {kept} tensors copied; fresh: {', '.join(fresh) or 'none'}")
    info = json.loads((ours_metadata(path) or {}).get("info", "{}"))
    return [*info.pop("history", []), {"checkpoint": str(path), **info}]


def typed_command() -> str:
    """This process's command line as typed (`python -m core train ...` or `python script.py ...`)."""
    as_module = Path(sys.argv[0]).name == "__main__.py"
    return shlex.join(["python", "-m", "core", *sys.argv[1:]] if as_module else ["python", *sys.argv])


def run_record(cfg: TrainConfig, device: torch.device, world: int, data: ShardReader | None, wall_s: float) -> dict:
    """What a checkpoint says of how it was made: the command as typed, the data (each folder's
    generator settings and sample count), the hardware and the run's wall time."""
    folders = {}
    for folder in cfg.data:
        settings = Path(folder) / "dataset.json"
        folders[folder] = json.loads(settings.read_text()) if settings.exists() else {}
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()}-core CPU"
    return {
        "command": typed_command(),
        "world_size": world,
        "device": str(device),
        "data": {"folders": folders, "samples": len(data) if data is not None else 0},
        "hardware": f"{world} × {hardware}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "wall_time_s": round(wall_s),
    }


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun."""
    from ..inference import pick_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train (or resume) the run in cfg.out; returns the path of the final EMA checkpoint."""
    from tqdm import tqdm

    rank, world, device = setup_distributed(cfg.device)
    master = rank == 0
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + rank)

    if not cfg.data and cfg.stream_fraction < 1:
        raise ValueError("no training data: give shard folders, or stream_fraction = 1 for the torch stream alone")
    data = ShardReader(cfg.data) if cfg.stream_fraction < 1 else None
    if data is not None and cfg.stream_fraction > 0 and data.mode != cfg.stream_mode:
        raise ValueError(f"the shards hold {data.mode} samples but the stream draws {cfg.stream_mode} ones")
    model_cfg = build_config(cfg.model, **cfg.model_overrides)
    shard_frames = data.frames if data is not None else cfg.stream_frames
    if (
        model_cfg.temporal != (cfg.stream_frames > 1)
        or shard_frames != cfg.stream_frames
        or (cfg.stream_frames > 1 and cfg.val)
    ):
        raise ValueError(
            "a temporal model trains on clips and a single-image model on single images: give temporal models "
            "--stream-frames T > 1, shards of T-frame clips (`generate --frames T`) if any, and no --val "
            f"(`python -m core eval-clip` measures them); got temporal={model_cfg.temporal}, "
            f"stream_frames={cfg.stream_frames}, shards of {shard_frames}-frame samples"
        )
    if data is not None and (model_cfg.num_layers > data.num_layers or data.resolution != (model_cfg.image_size,) * 2):
        raise ValueError(
            f"the shards ({data.resolution}, {data.num_layers} layers) do not fit model {cfg.model} "
            f"({model_cfg.image_size} px, {model_cfg.num_layers} layers)"
        )
    normalization = PointNormalization(cfg.normalization)
    val = ShardReader(cfg.val) if cfg.val else None

    if model_cfg.silhouette_prior and cfg.normalization != "zscore":
        raise ValueError("the silhouette prior is in object units: train it with normalization zscore")
    model = WTDiT(model_cfg).to(device)
    state_path = out / "state.safetensors"
    history: list[dict] = []
    if cfg.init and not state_path.exists():
        history = warm_start(model, cfg.init, log=print if master else lambda _: None)
    model.encoder.requires_grad_(not model_cfg.encoder.frozen)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = configure_optimizer(model, cfg, device)
    step, wall_s = load_state(state_path, model, ema, optimizer, device) if state_path.exists() else (0, 0.0)
    net: torch.nn.Module = DistributedDataParallel(model) if world > 1 else model
    if cfg.compile:
        net = cast(torch.nn.Module, torch.compile(net))
    autocast = bf16_autocast(device)
    generator = torch.Generator(device).manual_seed(cfg.seed * 1000 + rank * 7919 + step)
    batches = training_batches(cfg, data, model_cfg, device, rank, step)
    if master:
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
        source = f"{len(data)} shard samples" if data is not None else "no shards"
        print(
            f"model {cfg.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters; {source}, "
            f"{cfg.stream_fraction:.0%} of each batch streamed; {world} process(es) on {device}; "
            f"starting at step {step}"
        )

    with open(out / "log.jsonl" if master else os.devnull, "a") as log:  # only the master writes
        bar = tqdm(total=cfg.steps, initial=step, disable=not (master and progress), desc="train")
        t_last, samples_since, t_start = time.time(), 0, time.time()
        while step < cfg.steps:
            time_used = (time.time() - t_start) / (60 * cfg.minutes) if cfg.minutes else 0.0
            lr = get_lr(step, cfg, time_used)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = next(batches)
            with autocast:
                loss, stats = flow_loss(
                    net,
                    batch,
                    normalization,
                    cfg.schedule,
                    generator,
                    cfg.loss,
                    cfg.anchor_share,
                    cfg.frame_correlation,
                )
            if not all_finite(loss, world):  # checked before stepping, on every rank
                raise RuntimeError(
                    f"loss is not finite at step {step + 1} ({stats['loss']} here); lower --lr or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item()
            optimizer.step()
            update_ema(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
            step += 1
            samples_since += cfg.batch_size * world
            bar.update(1)
            out_of_time = bool(cfg.minutes) and any_rank(time.time() - t_start >= 60 * cfg.minutes, world)
            last = step == cfg.steps or out_of_time
            if master and step % cfg.log_every == 0:
                now = time.time()
                row = dict(step=step, lr=lr, grad_norm=grad_norm, samples_per_s=samples_since / (now - t_last), **stats)
                t_last, samples_since = now, 0
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{stats['loss']:.4f}")
            if master and val is not None and (step % cfg.eval_every == 0 or last):
                indices = list(range(min(cfg.eval_samples, len(val))))
                sampling = make_card(model_cfg, normalization, "run", "ours").sample_config(steps=cfg.eval_steps)
                row = {
                    "step": step,
                    "val_loss": validation_loss(
                        ema, val, normalization, cfg.schedule, indices, model_cfg.num_layers, device
                    ),
                }
                row.update(
                    {f"val_{k}": v for k, v in evaluate_model(ema, normalization, val, indices, sampling).items()}
                )
                log.write(json.dumps(row) + "\n")
                log.flush()
                plot_curves(out)
                prediction_figure(ema, normalization, val, indices[:3], out / "predictions.png", sampling)
            if master and (step % cfg.save_every == 0 or last):
                run_s = wall_s + time.time() - t_start
                save_state(state_path, model, ema, optimizer, step, cfg, run_s)
                save_checkpoint(
                    out / "model.safetensors",
                    ema.state_dict(),
                    model_cfg,
                    normalization,
                    {
                        "step": step,
                        "train_config": asdict(cfg),
                        "samples_seen": step * cfg.batch_size * world,
                        **({"frame_correlation": cfg.frame_correlation} if model_cfg.temporal else {}),
                        **run_record(cfg, device, world, data, run_s),
                        "history": history,
                    },  # fmt: skip
                )
            if out_of_time:
                break
        bar.close()
        if world > 1:
            sums = replica_checksums(model, world)
            if master:
                log.write(json.dumps({"step": step, "replica_checksums": sums}) + "\n")
                if len(set(sums)) != 1:
                    raise RuntimeError(f"the {world} replicas hold different weights: {sums}")
            dist.barrier()  # every rank done with its last collective before any tears the group down
            dist.destroy_process_group()
    return out / "model.safetensors"


def any_rank(flag: bool, world: int) -> bool:
    """Is `flag` true on any rank? (All ranks agree, so they stop together.)"""
    if world == 1:
        return flag
    value = torch.tensor([float(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_finite(loss: torch.Tensor, world: int) -> bool:
    """Is the loss finite on every rank? (All ranks agree, so none steps or exits alone.)"""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if world > 1:
        bad = bad.to("cpu") if dist.get_backend() == "gloo" else bad
        dist.all_reduce(bad)
    return bad.item() == 0


def replica_checksums(model: torch.nn.Module, world: int) -> list[float]:
    """Each rank's sum of |weights| (float64), gathered: DDP replicas must agree exactly."""
    total = torch.stack([p.detach().double().abs().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(total) for _ in range(world)]
    dist.all_gather(
        gathered, total.to(next(model.parameters()).device) if dist.get_backend() == "nccl" else total.cpu()
    )
    return [float(g.item()) for g in gathered]


def plot_curves(out: Path) -> None:
    """Loss and validation curves of a run folder as PNGs (training loss, held-out metrics)."""
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_loss" in r]
    line_plot(
        {
            "train loss": ([r["step"] for r in train_rows], [r["loss"] for r in train_rows]),
            "val loss": ([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows]),
        },
        out / "loss.png",
        "flow loss",
        log_y=True,
    )
    metrics = {
        k: ([r["step"] for r in val_rows], [r.get(f"val_{k}", float("nan")) for r in val_rows])
        for k in ("l0_abs_rel", "all_cd_l1", "layer0_cd_l1", "all_f@0.05", "layer0_f@0.05")
    }
    line_plot(metrics, out / "val_metrics.png", "held-out metrics")
