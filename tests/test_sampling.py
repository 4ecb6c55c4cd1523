"""The flow sampler and the training objective, with exact oracles instead of a trained network."""

from __future__ import annotations

import pytest
import torch

from core.geometry.points import PointNormalization
from core.model.official import FRAME_CORRELATION
from core.sampling import SampleConfig, fill_noise, initial_noise, sample_steps, time_grid
from core.train.flow import ALIGNED_PLACEMENT, LOW_NOISE_MEAN, flow_loss, sample_timesteps


def oracle(x0: torch.Tensor):
    """A 'model' that always knows the clean sample."""
    return lambda x, t, image: x0.expand_as(x)


@pytest.mark.parametrize("solver, steps", [("euler", 1), ("euler", 20), ("heun", 7)])
def test_sampler_with_a_perfect_model_lands_on_the_sample(solver, steps):
    """With x̂0 exact, integrating the velocity from any noise ends on x0."""
    x0 = torch.randn(2, 3, 8, 8, 3)
    out = list(sample_steps(oracle(x0), None, torch.randn_like(x0), SampleConfig(steps=steps, solver=solver)))
    assert len(out) == steps and out[-1].step == steps and out[-1].t == 0.0
    torch.testing.assert_close(out[-1].x, x0, atol=1e-5, rtol=0)


def test_time_grid_is_uniform_and_shifts():
    """The grid runs 1 → 0 uniformly; a shift s > 1 keeps the ends and spends more steps at high noise."""
    torch.testing.assert_close(time_grid(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    shifted = time_grid(4, shift=3.0)
    assert shifted[0] == 1 and shifted[-1] == 0 and torch.all(shifted[1:-1] > time_grid(4)[1:-1])


def test_an_exception_from_a_step_stops_sampling():
    """The generator stops where the consumer raises (how Cancel stops a trace within one step)."""
    calls = []

    def model(x, t, image):
        calls.append(float(t[0]))
        return torch.zeros_like(x)

    with pytest.raises(KeyboardInterrupt):
        for step in sample_steps(model, None, torch.randn(1, 2, 4, 4, 3), SampleConfig(steps=20)):
            if step.step == 3:
                raise KeyboardInterrupt
    assert len(calls) == 3


def test_masked_sampling_shows_the_model_noise_outside_the_mask():
    """At invalid pixels every model call sees fresh noise; valid pixels see the state."""
    seen = []
    x0 = torch.zeros(1, 2, 4, 4, 3)

    def model(x, t, image):
        seen.append(x.clone())
        return x0

    valid = torch.zeros(1, 2, 4, 4, dtype=bool)
    valid[..., :2] = True
    noise = torch.randn(1, 2, 4, 4, 3)
    list(
        sample_steps(model, None, noise, SampleConfig(steps=3), valid=valid, generator=torch.Generator().manual_seed(0))
    )
    assert torch.equal(seen[0][valid], noise[valid])
    assert not torch.equal(seen[0][~valid], seen[1][~valid])


def test_per_sample_generators_make_samples_independent_of_batching():
    """Sample k of a batch drawn with generators (s, s+1, ...) equals a batch of one drawn with s+k."""

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = initial_noise(3, 1, 2, 4, 4, generator=gens([5, 6, 7]))
    alone = initial_noise(1, 1, 2, 4, 4, generator=gens([6]))
    torch.testing.assert_close(batch[1:2], alone)
    torch.testing.assert_close(fill_noise(batch, gens([5, 6, 7]))[2:], fill_noise(alone, gens([7])))


@pytest.mark.parametrize("rho", [pytest.param(FRAME_CORRELATION["r76"], id="r76"), pytest.param(0.0, id="iid")])
def test_frame_noise_has_unit_variance_and_the_configured_correlation(rho):
    """x_T of 3 frames × 2 layers drawn with SampleConfig(frame_correlation=ρ): N(0, 1) per frame, every
    pair of frames correlated by ρ (independent for 0), the layers of one frame independent."""
    n = initial_noise(4, 3, 2, 48, 48, SampleConfig(frame_correlation=rho), torch.Generator().manual_seed(0))
    per_layer = n.reshape(4, 3, 2, -1).transpose(0, 1)  # [T, B, L, H·W·3]
    frames = per_layer.reshape(3, -1)
    corr = torch.corrcoef(frames)
    assert torch.all((frames.std(dim=1) - 1).abs() < 0.02)
    assert torch.all((corr[~torch.eye(3, dtype=bool)] - rho).abs() < 0.02)
    layers = per_layer[0].transpose(0, 1).reshape(2, -1)
    assert abs(torch.corrcoef(layers)[0, 1]) < 0.02


def test_frame_correlation_must_be_a_correlation():
    """ρ outside [0, 1] would mix the noise with imaginary weights: refused."""
    with pytest.raises(ValueError, match="frame_correlation"):
        SampleConfig(frame_correlation=1.5)


@pytest.mark.parametrize("schedule", ["mixed", "per_layer", "shared_mixture", "logit_normal", "mixed_uniform"])
def test_noise_schedules_give_times_in_range(schedule):
    """Every schedule gives [B, L] times in (0, 1); shared schedules repeat one time per sample."""
    t = sample_timesteps(4096, 4, schedule, torch.Generator().manual_seed(0))
    assert t.shape == (4096, 4) and t.min() > 0 and t.max() < 1
    if schedule in ("shared_mixture", "logit_normal"):
        assert torch.all(t == t[:, :1])


def test_mixed_uniform_trains_the_visible_layer_near_pure_noise():
    """Sampling starts at t = 1: the mixed schedule puts under 1 % of layer 0's times above 0.9, the
    mixed_uniform one about a quarter of a tenth (2.5 %) more."""
    g = torch.Generator().manual_seed(0)
    mixed, uniform = (sample_timesteps(40000, 4, s, g) for s in ("mixed", "mixed_uniform"))
    assert (mixed[:, 0] > 0.9).float().mean() < 0.01
    assert 0.025 < (uniform[:, 0] > 0.9).float().mean() < 0.04


def test_per_layer_schedule_biases_the_visible_layer_to_low_noise():
    """Phase (i): layer 0's times sit lower than the hidden layers' (median sigmoid(-1) vs 0.5)."""
    t = sample_timesteps(20000, 4, "per_layer", torch.Generator().manual_seed(0))
    assert abs(t[:, 0].median() - torch.sigmoid(torch.tensor(LOW_NOISE_MEAN))) < 0.02
    assert abs(t[:, 1:].median() - 0.5) < 0.02


def batch(B=2, L=3, S=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    valid = torch.zeros(B, L, S, S, dtype=bool)
    valid[:, 0, 4:12, 4:12] = True
    valid[:, 1, 6:10, 6:10] = True
    points = torch.randn(B, L, S, S, 3, generator=g) * 0.2
    points[..., 2] = 2.0 + torch.arange(L).view(1, L, 1, 1) + 0.5 * torch.rand(B, L, S, S, generator=g)  # front to back
    return {"image": torch.rand(B, 3, S, S, generator=g), "points": points * valid[..., None], "valid": valid}


def test_loss_is_zero_for_the_exact_sample_and_ignores_the_background():
    """A model returning the true normalised sample scores 0, whatever happens outside the foreground."""
    from core.train.flow import training_target

    b = batch()
    norm = PointNormalization()
    target = training_target(b["points"], b["valid"], norm)
    loss, stats = flow_loss(lambda x, t, img, fg: target, b, norm, generator=torch.Generator().manual_seed(0))
    assert loss.item() == 0.0
    noisy_background = target + 5.0 * (~b["valid"][:, :1, ..., None])
    loss, _ = flow_loss(lambda x, t, img, fg: noisy_background, b, norm, generator=torch.Generator().manual_seed(0))
    assert loss.item() == 0.0


def test_depth_order_penalty_punishes_layers_in_front_of_earlier_ones():
    """Swapping layers 0 and 1 of a correct prediction adds a positive monotonic-depth term."""
    from core.train.flow import training_target

    b = batch()
    norm = PointNormalization()
    target = training_target(b["points"], b["valid"], norm)
    swapped = target[:, [1, 0, 2]]
    _, stats = flow_loss(lambda x, t, img, fg: swapped, b, norm, generator=torch.Generator().manual_seed(0))
    assert stats["depth_order"] > 0 and stats["loss"] > stats["endpoint"]


def test_aligned_loss_ignores_scale_and_z_shift_and_scores_shape():
    """The aligned loss's shape term is 0 for the truth scaled about the camera and moved along z (what the
    evaluation aligns away; only the small placement term sees it), agrees with the metrics' alignment,
    and grows with a change of shape."""
    from core.geometry.alignment import align_points_scale_z_shift, apply_scale_z_shift
    from core.train.flow import aligned_shape_error, object_extent, training_target

    b = batch()
    norm = PointNormalization()
    target = training_target(b["points"], b["valid"], norm)
    truth = norm.denormalize(target)
    fg, extent = b["valid"][:, 0], object_extent(b["points"], b["valid"])
    moved = truth * 1.3
    moved[..., 2] += 0.4
    assert aligned_shape_error(moved, truth, fg, extent).item() < 1e-10
    g = torch.Generator().manual_seed(1)
    bent = truth + 0.05 * torch.randn(truth.shape, generator=g)
    error = aligned_shape_error(bent, truth, fg, extent).item()
    p, q = bent[0, 0][fg[0]].double().numpy(), truth[0, 0][fg[0]].double().numpy()
    s, t = align_points_scale_z_shift(p, q)  # the metrics' alignment of sample 0, layer 0
    ours = aligned_shape_error(bent[:1, :1], truth[:1, :1], fg[:1], extent[:1]).item()
    assert abs(ours - (((apply_scale_z_shift(p, s, t) - q) / extent[0].item()) ** 2).mean()) < 1e-6
    assert error > 1e-4
    placed = norm.normalize(moved, torch.ones(2))
    loss, stats = flow_loss(
        lambda x, t, img, fg: placed, b, norm, generator=torch.Generator().manual_seed(0), loss="aligned"
    )
    assert stats["aligned"] < 1e-10 and stats["endpoint"] > 0.01
    assert loss.item() == pytest.approx(ALIGNED_PLACEMENT * stats["endpoint"], rel=1e-4)


@pytest.mark.parametrize("t0", [0.0, 0.3])
def test_an_anchored_visible_layer_waits_at_its_anchor_then_lands(t0):
    """With cfg.anchor, the first step's x̂0 goes to the anchor; the visible layer then holds
    (1 − t0)·guess + t0·noise, seen by the model at time min(t, t0) while the hidden layers come down
    from t = 1, and lands on x̂0 (t0 > 0) or stays on the guess (t0 = 0)."""
    x0 = torch.randn(2, 3, 8, 8, 3)
    guess = torch.randn(2, 8, 8, 3)
    noise = torch.randn_like(x0)
    times, firsts = [], []

    def model(x, t, image):
        times.append(t.clone())
        return x0

    def anchor(first):
        firsts.append(first.clone())
        return guess

    steps = list(sample_steps(model, None, noise, SampleConfig(steps=10, anchor=t0), anchor=anchor))
    assert len(firsts) == 1 and torch.equal(firsts[0], x0)
    assert times[0].shape == (2,) and float(times[0][0]) == 1.0  # the first call: every layer at t = 1
    for step, t in zip(steps[:-1], times[1:], strict=True):  # call k + 1 sees the state after step k
        assert t.shape == (2, 3)
        torch.testing.assert_close(t[:, 0], torch.full((2,), min(step.t, t0)))
        torch.testing.assert_close(t[:, 1:], torch.full((2, 2), step.t))
        if step.t >= t0:
            torch.testing.assert_close(step.x[:, 0], (1 - t0) * guess + t0 * noise[:, 0])
    torch.testing.assert_close(steps[-1].x[:, 0], guess if t0 == 0 else x0[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(steps[-1].x[:, 1:], x0[:, 1:], atol=1e-5, rtol=0)


def test_sampling_without_anchor_ignores_the_anchor_function():
    """The anchor function runs only when the config asks for anchoring (the released sampler stays as it is)."""
    x0 = torch.randn(1, 2, 4, 4, 3)
    noise = torch.randn_like(x0)

    def anchor(first):
        raise AssertionError("called without cfg.anchor")

    plain = list(sample_steps(oracle(x0), None, noise, SampleConfig(steps=4)))
    anchored_off = list(sample_steps(oracle(x0), None, noise, SampleConfig(steps=4), anchor=anchor))
    assert all(torch.equal(a.x, b.x) for a, b in zip(plain, anchored_off, strict=True))
    with pytest.raises(ValueError, match="anchor"):
        SampleConfig(anchor=1.0)


def test_anchored_training_starts_the_visible_layer_from_the_placed_silhouette():
    """With anchor_share = 1 every sample's layer 0 is (1 − t0)·prior + t0·noise at its time t0 < 0.4, the
    prior being the truth's own silhouette inflation up to one scale per sample; hidden layers keep
    their path. With share 0 nothing changes."""
    from core.geometry.silhouette import inflate
    from core.train.flow import ANCHOR_MAX_T, anchored_start

    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    mask = (((yy - 15.5) / 10) ** 2 + ((xx - 15.5) / 12) ** 2 < 1)[None].expand(3, -1, -1)
    truth = inflate(mask, 40.0, 3.0, 2)  # [B, 2, H, W, 3]: the inflation of its own mask
    valid = mask[:, None].expand(-1, 2, -1, -1)
    norm = PointNormalization("zscore")
    x0, noise = norm.normalize(truth, torch.ones(3)), torch.randn(3, 2, 32, 32, 3)
    t = torch.full((3, 2), 0.7)
    x_t = 0.3 * x0 + 0.7 * noise
    same = anchored_start(x_t, t, noise, truth, valid, norm, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(same[0], x_t) and torch.equal(same[1], t)
    x_a, t_a = anchored_start(x_t, t, noise, truth, valid, norm, 1.0, torch.Generator().manual_seed(0))
    t0 = t_a[:, 0]
    assert (t0 < ANCHOR_MAX_T).all() and torch.equal(t_a[:, 1], t[:, 1]) and torch.equal(x_a[:, 1], x_t[:, 1])
    prior = norm.denormalize((x_a[:, 0] - t0[:, None, None, None] * noise[:, 0]) / (1 - t0[:, None, None, None]))
    ratio = prior[..., 2][mask] / truth[:, 0, ..., 2][mask]  # one scale per sample, the jitter
    per_sample = ratio.split(int(mask[0].sum()))
    assert all(torch.allclose(r, r[0].expand_as(r), rtol=1e-3) for r in per_sample)
    assert any(abs(float(r[0]) - 1) > 1e-3 for r in per_sample)
