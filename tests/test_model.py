"""WT-DiT against the released models' reference vectors (interop/SPEC.md §19), and its contracts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from core.geometry.points import PointNormalization
from core.inference import model_callable
from core.model.cost import count_parameters
from core.model.encoder import EncoderConfig
from core.model.loading import describe_model, make_card
from core.model.modules import SHORT_SEQUENCE, attend
from core.model.official import (
    infer_config,
    load_official,
    official_to_ours,
    ours_to_official,
    release_normalization,
)
from core.model.wtdit import WTDiT, WTDiTConfig, build_config
from core.precision import native_bf16
from core.sampling import initial_noise, sample_steps

VARIANTS = ["tiny", "tiny_filmadaln", "tiny_temporal"]


def reference_config(interop, name: str) -> WTDiTConfig:
    c = json.loads((interop / f"{name}_config.json").read_text())
    mk, ek = c["model_kwargs"], c["encoder_override"]
    return WTDiTConfig(
        image_size=c["image_hw"][0],
        patch_size=mk["patch_size"],
        num_layers=mk["num_layers"],
        dim=mk["decoder_embed_dim"],
        num_heads=mk["num_decoder_heads"],
        depth=mk["num_decoder_blocks"],
        head_depth=mk["num_head_blocks"],
        layer_conditioning=mk["layer_embed_mode"],
        temporal=mk.get("use_temporal_blocks", False),
        encoder=EncoderConfig(
            embed_dim=ek["embed_dim"],
            depth=ek["depth"],
            num_heads=ek["num_heads"],
            pos_grid=ek["img_size"] // ek["patch_size"],
            num_features=ek["intermediate_layers"],
        ),
    )


@pytest.fixture(scope="module", params=VARIANTS)
def reference(request, interop):
    name = request.param
    cfg = reference_config(interop, name)
    model, normalization, _ = load_official(interop / f"{name}_state_dict.safetensors", config=cfg)
    io = load_file(str(interop / f"{name}_io.safetensors"))
    frames = json.loads((interop / f"{name}_config.json").read_text()).get("num_time", 1)
    B, L, S = 2, cfg.num_layers, cfg.image_size
    image = io["input/rgb_model_cond"][:, ::L]  # one image per frame: [B, T, 3, H, W]
    return name, model, normalization, io, image, (B, frames * L, S, S, 3)


def test_forward_reproduces_the_reference_velocity(reference):
    """Our forward (x̂0 → v) matches the released model's raw output to ≤ 1e-4 absolute in float32."""
    name, model, _, io, image, shape = reference
    x = io["input/psi_t"].reshape(shape)
    t = io["input/t"]
    with torch.no_grad():
        x0 = model(x, t, image)
    v = (x - x0) / t.clamp_min(0.05).view(-1, 1, 1, 1, 1)
    assert (v - io["output/v_t"].reshape(shape)).abs().max() <= 1e-4
    assert (-x0 - io["output/raw_head_out_unpatchified"].reshape(shape)).abs().max() <= 1e-4


def test_sampler_reproduces_the_reference_runs(reference, interop):
    """Sampled as the file's card says (tiny_temporal, an r76 shape: frames correlated by the reference's
    ρ = 0.5) from the reference seed, the run starts from the reference noise bit for bit and four Euler
    steps match every intermediate state; the masked run (from its stored noise) matches too."""
    name, model, normalization, io, image, shape = reference
    cfg = describe_model(interop / f"{name}_state_dict.safetensors").sample_config(steps=4)
    reference_sampler = json.loads((interop / f"{name}_config.json").read_text())["sampler"]
    assert cfg.frame_correlation == reference_sampler["noise_time_corr"]
    B, V, S = shape[:3]
    L = model.cfg.num_layers

    def run(cfg):  # the noise (seed 7, as the reference's) and the sampler's steps from it
        noise = initial_noise(B, V // L, L, S, S, cfg, torch.Generator().manual_seed(7))
        return noise, list(sample_steps(model, image, noise, cfg))

    noise, steps = run(cfg)
    assert torch.equal(noise, io["sampler/x_T"].permute(0, 2, 3, 4, 1))
    scale = io["sampler/x0"].abs().max()
    for k in (1, 2, 3):
        assert (steps[k - 1].x - io[f"sampler/x_after_step_{k}"]).abs().max() / scale < 1e-5
    assert (steps[-1].x - io["sampler/x0"]).abs().max() / scale < 1e-5
    denorm = normalization.denormalize(steps[-1].x)
    assert (denorm - io["sampler/xyz_denorm"]).abs().max() / io["sampler/xyz_denorm"].abs().max() < 1e-5
    valid = io["sampler_masked/valid_mask"]
    draws = [d.reshape(shape) for d in io["sampler_masked/fill_noise_draws"]]
    noise = io["sampler_masked/x_T"].permute(0, 2, 3, 4, 1)
    final = list(sample_steps(model, image, noise, cfg, valid=valid, fill_draws=draws))[-1].x
    assert (final - io["sampler_masked/x0"]).abs().max() / io["sampler_masked/x0"].abs().max() < 1e-5
    if cfg.frame_correlation:  # the same seed with independent frames starts and ends elsewhere
        _, iid = run(replace(cfg, frame_correlation=0.0))
        assert (iid[-1].x - io["sampler/x0"]).abs().max() / scale > 1e-2


@pytest.mark.parametrize("name", ["r75b", "r69l", "r76"])
def test_release_cards_sample_with_the_released_frame_correlation(interop, name):
    """A release's card gives its sampler the frame correlation of the official inference settings
    (release_configs.json: r76 0.5, none for the single-image releases), also once converted to our
    format; our own checkpoints, trained on independent noise, get none."""
    settings = json.loads((interop / "release_configs.json").read_text())[name]["inference_kwargs"]
    cfg = build_config(name)
    normalization = release_normalization(name, cfg)
    rho = settings.get("noise_time_corr", 0.0)
    assert make_card(cfg, normalization, name, name).sample_config(steps=3).frame_correlation == rho
    assert make_card(cfg, normalization, name, "ours", {"release": name}).sample_config().frame_correlation == rho
    assert make_card(cfg, normalization, name, "ours").sample_config().frame_correlation == 0.0


def test_only_models_trained_here_with_an_anchor_anchor_the_visible_layer():
    """Our object models, and our scene models with a DepthNet, sample anchored (DEFAULT_ANCHOR, or the
    time their info names; a setting given wins); the releases, converted or not, and scene models
    without a DepthNet never do."""
    from core.model.loading import DEFAULT_ANCHOR

    cfg = build_config("tiny")
    objects, scenes = PointNormalization("zscore"), PointNormalization("log_median")
    assert make_card(cfg, objects, "tiny", "ours").sample_config().anchor == DEFAULT_ANCHOR
    assert make_card(cfg, objects, "tiny", "ours", {"anchor": 0.3}).sample_config().anchor == 0.3
    assert make_card(cfg, objects, "tiny", "ours").sample_config(anchor=None).anchor is None
    assert make_card(cfg, scenes, "tiny", "ours").sample_config().anchor is None
    with_depth = build_config("tiny", depth_width=8)
    assert make_card(with_depth, scenes, "tiny", "ours").sample_config().anchor == DEFAULT_ANCHOR
    r75b = build_config("r75b")
    assert make_card(r75b, objects, "r75b", "r75b").sample_config().anchor is None
    assert make_card(r75b, objects, "r75b", "ours", {"release": "r75b"}).sample_config().anchor is None


def test_key_mapping_round_trips_and_infers_the_config(interop):
    """Official keys → ours → official is the identity; shapes alone give the decoder's config."""
    state = load_file(str(interop / "tiny_state_dict.safetensors"))
    ours = official_to_ours(state)
    back = ours_to_official(ours)
    assert set(back) == set(state) - {"net.encoder.mask_token"}
    assert all(torch.equal(back[k], state[k]) for k in back)
    cfg, release = infer_config(ours)
    ref = reference_config(interop, "tiny")
    assert release == "custom"
    assert (cfg.dim, cfg.num_heads, cfg.depth, cfg.head_depth, cfg.num_layers, cfg.patch_size) == (
        ref.dim,
        ref.num_heads,
        ref.depth,
        ref.head_depth,
        ref.num_layers,
        ref.patch_size,
    )


@pytest.mark.parametrize(
    "name, params", [("r75b", 1_705_047_628 - 1024), ("r69l", 1_549_175_884 - 1024), ("r76", 2_101_800_012 - 1024)]
)
def test_release_configs_have_the_released_parameter_counts(name, params):
    """r75b, r69l and r76 build with exactly the released parameter counts (less the unused mask token)."""
    assert count_parameters(build_config(name)) == params


@pytest.mark.parametrize("name", ["r75b", "r69l", "r76"])
def test_release_key_lists_match_ours(interop, name):
    """Every key and shape of the released state dicts (keys_*.tsv) maps onto our modules."""
    rows = [
        line.split("\t") for line in (interop / f"keys_{name}.tsv").read_text().splitlines() if not line.startswith("#")
    ]
    shapes = {k: tuple(json.loads(shape)) for k, shape, *_ in rows}
    with torch.device("meta"):
        model = WTDiT(build_config(name))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = official_to_ours({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    assert {k: tuple(v.shape) for k, v in mapped.items()} == ours
    cfg, release = infer_config(mapped)
    assert release == name and cfg == build_config(name)


def test_per_layer_times_equal_to_one_time_give_the_same_output():
    """t [B, L] with equal entries conditions every block exactly like t [B]."""
    torch.manual_seed(0)
    cfg = build_config(
        "tiny",
        image_size=32,
        patch_size=8,
        dim=32,
        num_heads=2,
        depth=3,
        head_depth=3,
        encoder={"embed_dim": 32, "depth": 2, "num_heads": 2, "pos_grid": 4, "num_features": 2},
    )
    model = WTDiT(cfg).eval()
    torch.nn.init.normal_(model.head.out.weight, std=0.1)
    x, image = torch.randn(2, 4, 32, 32, 3), torch.rand(2, 3, 32, 32)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        a = model(x, t, image)
        b = model(x, t[:, None].expand(2, 4), image)
        c = model(x, torch.tensor([[0.3, 0.9, 0.9, 0.9], [0.8, 0.1, 0.1, 0.1]]), image)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape


@pytest.mark.parametrize("tokens", [4, SHORT_SEQUENCE, 2 * SHORT_SEQUENCE])
def test_attention_on_short_sequences_matches_the_fused_kernel(tokens):
    """`attend` (explicit weights for short sequences on the CPU, the fused kernel otherwise) gives the
    fused kernel's output and gradients in float32."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(8, 2, tokens, 16, requires_grad=True) for _ in range(3))
    ours = attend(q, k, v)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(ours, fused, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(ours)
    ours_grads = torch.autograd.grad((ours * weights).sum(), (q, k, v))
    fused_grads = torch.autograd.grad((fused * weights).sum(), (q, k, v))
    for a, b in zip(ours_grads, fused_grads, strict=False):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sampling_uses_bf16_exactly_where_the_device_runs_it_natively(reference):
    """The sampler's model call runs in bf16 on CPUs with native bf16 (float32 elsewhere) and stays
    within bf16 rounding of the float32 forward."""
    name, model, _, io, image, shape = reference
    x, t = io["input/psi_t"].reshape(shape), io["input/t"]
    with torch.no_grad():
        exact = model(x, t, image)
    sampled = model_callable(model)(x, t, image)
    error = (sampled - exact).abs().max() / exact.abs().max()
    assert error < 5e-2
    assert (error > 0) == native_bf16(torch.device("cpu"))
