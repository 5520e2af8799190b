"""SmPO's kappa and the SmPO / InPO steps equal independent computations of the official formulas on fixed inputs.

Official (JaydenLyh/SmPO, JaydenLyh/InPO train.py; spec §3, §4): one t per pair; x_t by ReNoise (SmPO) or DDIM
(+ eta term, InPO) inversion with the current policy; implied noise eps^ = (x_t - sqrt(abar) x0)/sqrt(1 - abar);
loss = -logsig(-(beta/2) kappa ((e_w - e_l) - (e_ref_w - e_ref_l))) with kappa = 1 for InPO.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmalign.diffusion.config import MethodConfig
from mmalign.diffusion.noise_providers import NoiseConfig
from mmalign.diffusion.registry import InpoOptions
from mmalign.diffusion.soft_labels import SmpoConfig, SoftLabels, write_soft_labels
from mmalign.diffusion.steps.inpo import inpo_step
from mmalign.diffusion.steps.smpo import order_and_kappa, smpo_step, swap_pairs
from mmalign.objectives import preference_loss
from mmalign.objectives.smoothed import smpo_kappa
from tests.helpers import REPO, lora_step_setup

from .official_ddim020 import DDIMInverseScheduler020, batched_loop

B = 3
OFFICIAL_MIN, OFFICIAL_MAX = 0.11543526500463486, 0.28201571106910706


def _official_kappa(r_w: float, r_l: float, lo: float, hi: float, gamma: float = 10.0) -> float:
    """SmPO preprocessing/train formula, written out with numpy."""
    a, b = (r_w - lo) / (hi - lo), (r_l - lo) / (hi - lo)
    p = np.exp(a) / (np.exp(a) + np.exp(b))
    return float(gamma * (2 * p - 1))


def test_kappa_equals_the_official_formula():
    rng = np.random.default_rng(0)
    r = rng.uniform(OFFICIAL_MIN, OFFICIAL_MAX, size=(16, 2))
    r_w, r_l = r.max(1), r.min(1)  # scorer ordering (official)
    ours = smpo_kappa(torch.tensor(r_w), torch.tensor(r_l), gamma=10, reward_min=OFFICIAL_MIN, reward_max=OFFICIAL_MAX)
    expected = [_official_kappa(a, b, OFFICIAL_MIN, OFFICIAL_MAX) for a, b in zip(r_w, r_l)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6, atol=1e-7)
    assert (ours >= 0).all() and (ours <= 10 * (2 * (1 / (1 + math.exp(-1))) - 1) + 1e-6).all()  # [0, ~4.62]
    same = smpo_kappa(torch.tensor([0.2]), torch.tensor([0.2]), gamma=10, reward_min=0.1, reward_max=0.3)
    assert float(same) == 0.0  # equally good images → no preference signal
    with pytest.raises(ValueError, match="range is empty"):
        smpo_kappa(torch.tensor([0.2]), torch.tensor([0.1]), gamma=10, reward_min=0.2, reward_max=0.2)


def _labels(tmp_path, keys_c, keys_r, rewards):
    pairs = {f"{c}|{r}": list(v) for c, r, v in zip(keys_c, keys_r, rewards)}
    path = tmp_path / "labels.json"
    doc = write_soft_labels(path, pairs, scorer="test", source="inline")
    return SoftLabels.load(path), doc


def test_soft_label_file_min_max_from_data_and_orders(tmp_path):
    rewards = [(0.30, 0.10), (0.12, 0.25), (0.20, 0.20)]
    labels, doc = _labels(tmp_path, ["a", "b", "c"], ["x", "y", "z"], rewards)
    assert doc["reward_min"] == 0.10 and doc["reward_max"] == 0.30 and doc["scorer_disagrees_with_label"] == 1
    swap, kappa = order_and_kappa(labels, ["a", "b", "c"], ["x", "y", "z"], gamma=10, order="scorer")
    assert swap.tolist() == [False, True, False]
    expected = [_official_kappa(0.30, 0.10, 0.1, 0.3), _official_kappa(0.25, 0.12, 0.1, 0.3), 0.0]
    np.testing.assert_allclose(kappa.numpy(), expected, rtol=1e-6, atol=1e-7)
    swap_h, kappa_h = order_and_kappa(labels, ["a", "b", "c"], ["x", "y", "z"], gamma=10, order="human")
    # human order: no swap, the scorer's confidence |kappa| weights the pair in the human direction
    assert not swap_h.any()
    np.testing.assert_allclose(kappa_h.numpy(), np.abs(expected), rtol=1e-6, atol=1e-7)
    h = torch.tensor([0.3, -0.2, 0.1])  # DPO margins of the pairs in the data set's order
    swapped_h = torch.where(swap, -h, h)
    human_loss, scorer_loss = -F.logsigmoid(kappa_h * h), -F.logsigmoid(kappa * swapped_h)
    torch.testing.assert_close(human_loss[[0, 2]], scorer_loss[[0, 2]])  # pairs both orders agree on
    assert float(human_loss[1]) > float(scorer_loss[1])  # pair 1: human wants l > w where the margin says w > l
    # (a signed kappa in human order would reproduce the scorer-ordered loss exactly: the option would be a no-op)
    signed = smpo_kappa(torch.tensor([0.12]), torch.tensor([0.25]), gamma=10, reward_min=0.1, reward_max=0.3)
    torch.testing.assert_close(-F.logsigmoid(signed * h[1]), scorer_loss[1:2])
    with pytest.raises(KeyError, match="no soft label"):
        labels.rewards(["a"], ["nope"])


def test_official_reward_range_by_name(tmp_path):
    """method.smpo.reward_range=pickapic_v2_pickscore: SmPO train.py l.741-742's constants instead of the data's."""
    rewards = [(0.21, 0.15), (0.12, 0.26)]
    labels, _ = _labels(tmp_path, ["a", "b"], ["x", "y"], rewards)
    _, kappa = order_and_kappa(labels, ["a", "b"], ["x", "y"], gamma=10, order="scorer",
                               reward_range="pickapic_v2_pickscore")
    expected = [_official_kappa(0.21, 0.15, OFFICIAL_MIN, OFFICIAL_MAX), _official_kappa(0.26, 0.12, OFFICIAL_MIN,
                                                                                         OFFICIAL_MAX)]
    np.testing.assert_allclose(kappa.numpy(), expected, rtol=1e-6, atol=1e-7)
    _, data_kappa = order_and_kappa(labels, ["a", "b"], ["x", "y"], gamma=10, order="scorer")
    assert labels.reward_range() == (0.12, 0.26) and (data_kappa - kappa).abs().max() > 1e-3
    with pytest.raises(ValueError, match="method.smpo.reward_range"):
        labels.reward_range("laion")


def test_swap_pairs():
    x = torch.arange(6)
    assert swap_pairs(x, torch.tensor([False, True, False])).tolist() == [0, 4, 2, 3, 1, 5]


def _setup(model_dir: str, method: MethodConfig):
    return lora_step_setup(model_dir, method, pairs=B, image_keys=True)


def _eps(unet, latent, tau, cond):
    with torch.no_grad():
        return unet(latent.float(), tau, encoder_hidden_states=cond).sample.double()


def _ddim(z, e, a, b):
    """x0_hat = (z - sqrt(1 - a) e) / sqrt(a); z' = sqrt(b) x0_hat + sqrt(1 - b) e."""
    return b.sqrt() * (z - (1 - a).sqrt() * e) / a.sqrt() + (1 - b).sqrt() * e


def _independent_inversion(unet, abar, x0, cond, t, steps, renoise, eta):
    """Official-style loop, written independently: grid of max(1, ceil(K t / 1000)) levels ending at t."""
    grids = []
    for ti in t.tolist():
        n = max(1, math.ceil(steps * ti / 1000))
        grids.append([round(k * ti / n) for k in range(1, n + 1)])
    z = x0.clone().double()
    prev = [None] * len(grids)
    for k in range(max(map(len, grids))):
        act = [i for i, g in enumerate(grids) if k < len(g)]
        taus = [grids[i][k] for i in act]
        a = torch.tensor([1.0 if prev[i] is None else float(abar[prev[i]]) for i in act]).double().view(-1, 1, 1, 1)
        b = abar[taus].double().view(-1, 1, 1, 1)
        zi, tau, c = z[act], torch.tensor(taus), cond[act]
        e1 = _eps(unet, zi, tau, c)
        new = _ddim(zi, e1, a, b)
        if renoise:  # official SmPO: e2 at the provisional point, step with (e1 + e2) / 2
            new = _ddim(zi, (e1 + _eps(unet, new, tau, c)) / 2, a, b)
        if eta:
            var = (1 - a) / (1 - b) * (1 - b / a)
            new = new + eta * var.sqrt() * torch.randn(new.shape).double()
        z[act] = new
        for i, tau in zip(act, taus):
            prev[i] = tau
    return z.float()


def _inversion(convention, parts, x0, cond, t, steps, renoise, eta):
    """exact: the independent loop above; official: diffusers 0.20 + the official loop (official_ddim020.py)."""
    if convention == "exact":
        return _independent_inversion(parts.unet, parts.scheduler.alphas_cumprod, x0, cond, t, steps, renoise, eta)
    inverse = DDIMInverseScheduler020(dict(parts.scheduler.config))
    inverse.set_timesteps(steps)
    return batched_loop(parts.unet, inverse, x0, t, {"prompt_embeds": cond}, renoise=renoise, inversion_eta=eta)


def _official_errors(unet, abar, x0, cond, t, x_t):
    a = abar[t].view(-1, 1, 1, 1)
    eps_hat = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps_hat
    return ((unet(x_t, t, encoder_hidden_states=cond).sample - eps_hat) ** 2).mean(dim=(1, 2, 3))


def _official_loss(parts, x0, cond, t2, x_t, beta, kappa):
    unet = parts.unet
    abar = parts.scheduler.alphas_cumprod
    with torch.no_grad():
        e = _official_errors(unet, abar, x0, cond, t2, x_t)
        unet.disable_adapters()
        e_ref = _official_errors(unet, abar, x0, cond, t2, x_t)
        unet.enable_adapters()
    (e_w, e_l), (r_w, r_l) = e.chunk(2), e_ref.chunk(2)
    return -F.logsigmoid(-0.5 * beta * kappa * ((e_w - e_l) - (r_w - r_l))).mean(), e, e_ref


@pytest.mark.parametrize("inversion_model,convention", [("policy", "official"), ("reference", "official"),
                                                        ("policy", "exact")])
def test_inpo_loss_matches_independent_computation(tiny_dirs, inversion_model, convention):
    beta = 2000.0
    noise = NoiseConfig(provider="ddim", inversion_steps=10, eta=0.1, inversion_model=inversion_model,
                        convention=convention)
    parts, ctx, batch = _setup(tiny_dirs["sd15"], MethodConfig(name="inpo", beta=beta, inpo=InpoOptions(noise=noise)))
    torch.manual_seed(123)
    loss, metrics = inpo_step(ctx, parts.unet, batch)

    torch.manual_seed(123)
    t = torch.randint(0, 1000, (B,))
    torch.randn(B, 4, 16, 16)  # the step draws (and ignores) a forward noise with its t
    t2 = t.repeat(2)
    x0, cond = batch["latent_mean"], batch["prompt_embeds"]
    if inversion_model == "reference":
        parts.unet.disable_adapters()
    x_t = _inversion(convention, parts, x0, cond, t2, 10, False, 0.1)
    parts.unet.enable_adapters()
    official, e, e_ref = _official_loss(parts, x0, cond, t2, x_t, beta, 1.0)
    assert float(official) != pytest.approx(math.log(2), abs=1e-4)
    torch.testing.assert_close(loss.detach(), official, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metrics["model_mse"], e.mean(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(metrics["ref_mse"], e_ref.mean(), rtol=1e-4, atol=1e-6)
    # the same batch through preference_loss directly (the objective the step composes)
    (e_w, e_l), (r_w, r_l) = e.chunk(2), e_ref.chunk(2)
    direct, _ = preference_loss("sigmoid", chosen=-0.5 * e_w, rejected=-0.5 * e_l, ref_chosen=-0.5 * r_w,
                                ref_rejected=-0.5 * r_l, beta=beta)
    torch.testing.assert_close(loss.detach(), direct.mean(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("order,convention", [("scorer", "official"), ("human", "official"), ("scorer", "exact")])
def test_smpo_loss_matches_independent_computation(tiny_dirs, tmp_path, order, convention):
    beta, gamma = 2000.0, 10.0
    rewards = [(0.21, 0.15), (0.12, 0.26), (0.30, 0.29)]  # pair 1: the scorer disagrees with the label
    _labels(tmp_path, [f"w{i}" for i in range(B)], [f"l{i}" for i in range(B)], rewards)
    noise = NoiseConfig(provider="renoise", inversion_steps=5, renoise_iters=1, convention=convention)
    smpo = SmpoConfig(gamma=gamma, order=order, labels=str(tmp_path / "labels.json"), noise=noise)
    parts, ctx, batch = _setup(tiny_dirs["sd15"], MethodConfig(name="smpo", beta=beta, smpo=smpo))
    torch.manual_seed(7)
    loss, metrics = smpo_step(ctx, parts.unet, batch)

    torch.manual_seed(7)
    t = torch.randint(0, 1000, (B,))
    t2 = t.repeat(2)
    x0, cond = batch["latent_mean"].clone(), batch["prompt_embeds"].clone()
    lo, hi = 0.12, 0.30
    kappa = []
    for i, (r_c, r_r) in enumerate(rewards):
        if order == "scorer" and r_r > r_c:  # official: the scorer's winner goes first
            for tensor in (x0, cond):
                tensor[[i, B + i]] = tensor[[B + i, i]]
            r_c, r_r = r_r, r_c
        kappa.append(abs(_official_kappa(r_c, r_r, lo, hi, gamma)))  # >= 0 in scorer order anyway
    kappa = torch.tensor(kappa)
    x_t = _inversion(convention, parts, x0, cond, t2, 5, True, 0.0)
    official, _, _ = _official_loss(parts, x0, cond, t2, x_t, beta, kappa)
    torch.testing.assert_close(loss.detach(), official, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(metrics["kappa"], kappa.mean().float(), rtol=1e-5, atol=1e-6)
    assert float(metrics["smpo_swapped"]) == pytest.approx(1 / 3 if order == "scorer" else 0.0)


def test_smpo_labels_command_scores_every_pair(pairs_path, tmp_path, capsys):
    import json

    from mmalign.cli import main

    config = str(REPO / "recipes" / "configs" / "diffusion" / "toy_smpo.yaml")
    labels = tmp_path / "labels.json"
    assert main(["smpo-labels", "--config", config, "--device", "cpu", f"data.path={pairs_path}",
                 f"output_dir={tmp_path / 'out'}", f"method.smpo.labels={labels}",
                 "method.smpo.scorer=tiny:pickscore"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["labels"] == str(labels) and out["num_pairs"] == 4 and out["scorer"] == "pickscore"
    loaded = SoftLabels.load(labels)
    assert len(loaded.pairs) == 4 and loaded.reward_min < loaded.reward_max
    # the stored rewards are the scorer API's raw cosines of (chosen, rejected) against the prompt
    from mmalign.data import load_preference_data
    from mmalign.diffusion.soft_labels import load_label_scorer
    from mmalign.testing.placeholders import resolve_scorer_placeholders

    smpo = SmpoConfig(scorer="tiny:pickscore")
    resolve_scorer_placeholders(smpo, tmp_path / "out" / "tiny_inputs")
    scorer = load_label_scorer(smpo)
    item = load_preference_data(pairs_path, kind="pairs")[0]
    raw = scorer.score([item["chosen"], item["rejected"]], item["prompt"], raw=True)
    expected = loaded.pairs[f"{item['chosen_key']}|{item['rejected_key']}"]
    np.testing.assert_allclose(raw.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["inpo", "smpo"])
def test_a_small_gradient_step_lowers_the_loss(tiny_dirs, tmp_path, method):
    """Gradients flow to the LoRA weights with the right sign: one small SGD step on the step's own loss lowers it
    (same t, same inversion draws; the inversion is redone with the updated policy, as in training)."""
    _labels(tmp_path, [f"w{i}" for i in range(B)], [f"l{i}" for i in range(B)], [(0.3, 0.1), (0.1, 0.3), (0.25, 0.2)])
    cfg = MethodConfig(name=method, beta=2000.0)
    cfg.smpo.labels = str(tmp_path / "labels.json")
    getattr(cfg, method).noise.inversion_steps = 4
    parts, ctx, batch = _setup(tiny_dirs["sd15"], cfg)
    step = {"inpo": inpo_step, "smpo": smpo_step}[method]
    params = [p for p in parts.unet.parameters() if p.requires_grad]
    torch.manual_seed(3)
    loss0, _ = step(ctx, parts.unet, batch)
    loss0.backward()
    with torch.no_grad():
        for p in params:
            p -= 1e-3 * p.grad / max(float(torch.cat([q.grad.flatten() for q in params]).norm()), 1e-12)
    torch.manual_seed(3)
    loss1, _ = step(ctx, parts.unet, batch)
    assert float(loss1) < float(loss0), (float(loss0), float(loss1))
