"""The light options sections of the diffusion methods that have their own module (``method.smpo.*``,
``method.inpo.noise`` / ``method.smpo.noise``, ``method.ppd.*``, ``method.grpo.*``, ``method.online_dpo.*``) and
the ``reward:`` block: no torch, so the config schema and the method registry load before any model library, and
the registry imports no method package (PPD's and the online methods' code import the registry, never the other
way round).

* :class:`NoiseConfig` — a noise provider's options (the providers: :mod:`mmalign.diffusion.noise_providers`);
* :class:`SmpoConfig` — SmPO's soft labels and noise (:mod:`mmalign.diffusion.soft_labels`,
  :mod:`mmalign.diffusion.steps.smpo`);
* :class:`PpdConfig` — PPD's user embeddings and user cross-attention (:mod:`mmalign.diffusion.ppd`, spec §5);
* :class:`GrpoOptions`, :class:`OnlineDpoOptions` (both :class:`RolloutOptions`) and :class:`RewardConfig` — the
  online methods (:mod:`mmalign.diffusion.online`, whose package docstring says how an epoch runs). Their defaults
  are flow_grpo's ``config/grpo.py`` ``pickscore_sd3`` (yifan123/flow_grpo@ac4c86e8cae021841f1fde853d340e0db67690dd) unless noted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmalign.validate import OneOf, Range, register, register_check


@dataclass
class NoiseConfig:
    provider: str = "forward"
    """forward | ddim | renoise (the defaults of method.smpo.noise: renoise, method.inpo.noise: ddim)."""
    convention: str = "official"
    """official | exact: the inversion grid and the timestep the model is queried at (inversion/plan.py).
    official = diffusers 0.20 DDIMInverseScheduler as the SmPO/InPO code ran it: rolled "leading" grid of K
    points, model queried at the level of its input latent (the clean latent at -T/K + steps_offset), every grid
    step below t, so the latent ends at the next grid level >= t; exact = a grid from the clean latent ending
    exactly at t, model queried at each step's target level."""
    inversion_steps: int = 10
    """K: grid points over the full range [0, T) (official: 10 for SDXL and InPO, 5 for SmPO SD1.5; the official
    convention needs K >= 2). exact: a sample at t gets max(1, ceil(K t / T)) steps ending exactly at t."""
    renoise_iters: int = 1
    """ReNoise re-predictions per inversion step (official SmPO: 1, i.e. the average of 2 predictions)."""
    eta: float = 0.0
    """Stochastic term of DDIM inversion, eta * sqrt(Var_DDIM) * N(0, I) per step (method.inpo.noise: 0.1)."""
    inversion_model: str = "policy"
    """policy (current weights, official) | reference (the reference model)."""


@dataclass
class SmpoConfig:
    scorer: str = "pickscore"
    """Scorer card for the soft labels (scorers.load_scorer name or card YAML path; tiny:<card> = tiny random
    weights for smoke tests). Official: PickScore raw cosine."""
    scorer_checkpoint: str | None = None
    """Scorer checkpoint (local path or hub id; null: the card's default)."""
    scorer_options: dict[str, Any] = field(default_factory=dict)
    """Card overrides passed to scorers.load_scorer (e.g. arch, backbone_checkpoint)."""
    gamma: float = 10.0
    """kappa = gamma * (2p - 1) (paper and code: 10)."""
    order: str = "scorer"
    """scorer: the higher-scored image is the winner (official 'data cleaning'); human: the data's winner stays the
    winner and the scorer only weights the pair, kappa = gamma |2p - 1| (a signed kappa would re-order every pair
    the scorer disagrees with: the same loss as 'scorer'; see mmalign.objectives.smoothed)."""
    labels: str | None = None
    """Soft-label file (JSON). null: <data cache root>/smpo_labels/<scorer>-<data+scorer fingerprint>.json,
    computed on first use. An existing file given here is used as is."""
    reward_range: str = "data"
    """Min/max of the reward normalisation: data (over the data set's scored images, stored with the labels) or a
    named official range: pickapic_v2_pickscore = 0.11543526500463486 .. 0.28201571106910706 (SmPO train.py)."""
    batch_size: int = 32
    """Images per scorer forward while labelling."""
    noise: NoiseConfig = field(default_factory=lambda: NoiseConfig(provider="renoise", eta=0.0))
    """Noise provider (official SmPO: ReNoise inversion); see noise_providers.py."""


@dataclass
class PpdConfig:
    embedding: str = "vlm"
    """User-embedding source: vlm (AutoModelForImageTextToText, final-step hidden states across layers; the paper)
    | clip (mean(chosen) - mean(rejected) image embeddings of a scorer; light alternative)
    | clip_margin (mean of caption text embedding * (chosen - rejected) image embedding, elementwise: the
    caption-aware light alternative)."""
    vlm: str | None = None
    """embedding=vlm: hub id or local folder of the VLM (paper: lmms-lab/llava-onevision-qwen2-7b-ov-chat, use
    its transformers port llava-hf/llava-onevision-qwen2-7b-ov-chat-hf)."""
    vlm_dtype: str = "bfloat16"
    """dtype of the VLM while embedding users."""
    max_new_tokens: int = 1024
    """Greedy generation length of the user profile (official 1024); the embedding is taken at the last step."""
    trust_remote_code: bool = False
    """Pass trust_remote_code to the VLM loader (only for models that need it)."""
    scorer: str = "clipscore"
    """embedding=clip / clip_margin: scorer card name (scorers.load_scorer)."""
    scorer_checkpoint: str | None = None
    """embedding=clip / clip_margin: scorer checkpoint (null: the card's default)."""
    shots: int = 4
    """N few-shot pairs per user that make its embedding (paper: 4); they are excluded from training."""
    cache_dir: str | None = None
    """Where user embeddings are cached (null: <output_dir>/user_embeddings)."""
    num_tokens: int = 4
    """User tokens for a single-vector embedding (clip); a VLM embedding gives one token per layer."""
    init: str = "zero"
    """New key/value init: zero (W_v' = 0: the policy starts equal to the reference) | text (copy to_k/to_v)."""
    scale: float = 1.0
    """Scale of the user attention branch."""
    user_dropout: float = 0.1
    """Probability of zeroing a pair's user embedding in training (regularisation, unseen users)."""
    seed: int = 0
    """Seed of the shot split and of the adapter init."""


SDE_KINDS = ("auto", "flow_grpo", "dance", "ddim")
"""``auto``: flow_grpo's SDE step on flow models (SD3 / FLUX), the DDIM step with eta on DDPM UNets (DDPO)."""


@dataclass
class RolloutOptions:
    """What both online methods sample with (``method.<grpo|online_dpo>.*``)."""

    group_size: int = 24
    """Images per prompt in one rollout (flow_grpo ``sample.num_image_per_prompt``); >= 2: the group statistics
    (GRPO) and the best / worst pair (online DPO) need two."""
    prompts_per_epoch: int = 48
    """Prompts drawn (without replacement, a permutation per epoch of the train prompts) per rollout phase
    (flow_grpo: 32 GPUs x 9 images x 4 batches / 24 per prompt = 48)."""
    rollout_batch_size: int = 8
    """Images per denoiser call while sampling (prompt embeddings are encoded once per prompt, CFG doubles it)."""
    num_steps: int = 10
    """Sampler steps of a training rollout (flow_grpo ``sample.num_steps``)."""
    eval_steps: int = 40
    """Sampler steps of the fixed evaluation prompts (``validation.prompts``; flow_grpo ``eval_num_steps``): their
    grid goes to TensorBoard (``online/eval_grid``) every ``eval_every`` epochs, before that epoch's rollouts."""
    eval_every: int = 1
    """Epochs between evaluation grids (0: none; the recipe's own validation grids are unaffected)."""
    guidance_scale: float = 4.5
    """Classifier-free guidance during rollouts and the log-prob recomputation (negative prompt: "")."""
    sde: str = "auto"
    """auto | flow_grpo | dance | ddim (:data:`SDE_KINDS`)."""
    noise_level: float = 0.7
    """flow_grpo's SDE noise level a (std_dev_t = a * sqrt(sigma / (1 - sigma))); 0 = the Euler ODE step."""
    eta: float = 1.0
    """DDIM eta (ddpo-pytorch 1.0) and DanceGRPO's constant diffusion coefficient (its FLUX script: 0.3)."""
    sde_window_size: int = 0
    """Flow-GRPO-Fast: only this many consecutive steps are SDE (and trained), the window start drawn per epoch
    in ``sde_window_range``; 0 = every step is SDE."""
    sde_window_range: list[int] = field(default_factory=list)
    """[low, high) of the window start (empty: [0, num_steps // 2], flow_grpo ``sde_window_range``)."""
    same_noise: bool = False
    """One initial noise per prompt group (DanceGRPO ``init_same_noise``; flow_grpo ``same_latent``)."""


@dataclass
class GrpoOptions(RolloutOptions):
    """GRPO (Flow-GRPO / DanceGRPO / DDPO): ``method.grpo.*``."""

    timestep_fraction: float = 0.99
    """Trained transitions per trajectory: int(num_steps * timestep_fraction) (0.99 of 10: 9, the last one never)."""
    clip_range: float = 1.0e-4
    """PPO ratio clip: clip(ratio, 1 - clip_range, 1 + clip_range)."""
    adv_clip_max: float = 5.0
    """Advantages clipped to [-adv_clip_max, adv_clip_max]."""
    kl_beta: float = 0.01
    """Weight of the KL to the reference (flow_grpo ``train.beta``: KL of the SDE means; LoRA: adapters off);
    0 = no reference forward at all."""
    inner_epochs: int = 1
    """Passes over each rollout batch (flow_grpo ``train.num_inner_epochs``)."""
    global_std: bool = True
    """Advantages (r - mean_prompt) / std over the whole batch (flow_grpo ``sample.global_std``) instead of the
    prompt group's std."""
    per_prompt_stats: bool = True
    """Per-prompt means (flow_grpo ``per_prompt_stat_tracking``); false: one mean / std over the batch."""

    def trained_steps(self) -> int:
        """Transitions trained per trajectory: int(K * timestep_fraction) of its K stochastic steps (K =
        num_steps, or sde_window_size with the Flow-GRPO-Fast window)."""
        return max(1, int((self.sde_window_size or self.num_steps) * self.timestep_fraction))

    def slots_per_epoch(self) -> int:
        """Micro-batch items per loop epoch: inner_epochs x samples x trained transitions."""
        return self.inner_epochs * self.prompts_per_epoch * self.group_size * self.trained_steps()


@dataclass
class OnlineDpoOptions(RolloutOptions):
    """Online Diffusion-DPO (flow_grpo ``scripts/train_sd3_dpo.py``, D3PO's online rounds): ``method.online_dpo.*``.
    ``method.beta`` is the DPO temperature (official -(beta/2) form)."""

    group_size: int = 2
    noise_level: float = 0.0
    """Rollouts of online DPO need no log-probs: the ODE sampler by default (the best / worst image decides)."""
    eta: float = 0.0
    """DDIM eta of the UNet pipelines' rollouts (0: deterministic DDIM; their own scheduler otherwise)."""
    ref_update_step: int = 0
    """Refresh the reference from the learner every this many optimizer steps (flow_grpo ``ref_update_step``);
    0 = the reference stays the base model (LoRA adapters off / the frozen copy)."""
    timesteps_per_pair: int = 1
    """Optimisation passes over each pair per epoch, each at a fresh random timestep and noise."""
    loss_type: str = "sigmoid"
    """As ``method.dpo.loss_type`` (the existing Diffusion-DPO step)."""
    label_smoothing: float = 0.0
    """As ``method.dpo.label_smoothing``."""

    def slots_per_epoch(self) -> int:
        """Micro-batch items per loop epoch: pairs (one per prompt) x timesteps_per_pair."""
        return self.prompts_per_epoch * self.timesteps_per_pair


@dataclass
class RewardConfig:
    """``reward:`` of the online methods: a weighted sum of scorers (``scorers.reward``), scored in batches on the
    decoded images, on its own device and dtype."""

    scorers: dict[str, float] = field(default_factory=dict)
    """{scorer name: weight}, e.g. {pickscore: 1.0, aesthetic: 0.2}; names from ``scorers/cards``."""
    checkpoints: dict[str, str] = field(default_factory=dict)
    """{scorer name: checkpoint} (a scorer not named here: its card's default checkpoint)."""
    scorer_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    """{scorer name: further scorers.load_scorer keywords}, e.g. {aesthetic: {backbone_checkpoint: /clip}}."""
    device: str = "auto"
    """auto (the training device) | cpu | cuda | cuda:N."""
    dtype: str = "float32"
    """Weight dtype of the reward models."""
    normalize: str = "none"
    """none | zscore | rank: each term normalised within its prompt group before weighting (scorers.reward)."""
    batch_size: int = 32
    """Images per scorer call."""


def scorer_names() -> list[str]:
    """The scorer names of ``scorers/cards`` (read from the folder: importing ``scorers`` would import torch)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("scorers")
    folders = list(spec.submodule_search_locations or []) if spec else []
    return sorted({p.stem for folder in folders for p in (Path(folder) / "cards").glob("*.yaml")})


def _reward_checks(r: RewardConfig) -> str | None:
    known = scorer_names()
    for name, weight in r.scorers.items():
        if name not in known:
            return f"scorers: unknown reward scorer '{name}' (known: {', '.join(known)})"
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight != weight or abs(weight) == float("inf"):
            return f"scorers.{name}: the weight must be a finite number, got {weight!r}"
    for section in ("checkpoints", "scorer_args"):
        for name in getattr(r, section):
            if name not in r.scorers:
                return f"{section}.{name}: '{name}' is not one of reward.scorers ({', '.join(r.scorers) or 'none'})"
    if r.device != "auto" and r.device != "cpu" and not r.device.startswith(("cuda", "mps", "xpu")):
        return f"device: '{r.device}' (auto, cpu, cuda, cuda:N)"
    return None


def _rollout_checks(o: RolloutOptions) -> str | None:
    if o.sde_window_size > o.num_steps:
        return f"sde_window_size ({o.sde_window_size}) is more than num_steps ({o.num_steps})"
    if o.sde_window_range and (len(o.sde_window_range) != 2 or not 0 <= o.sde_window_range[0] < o.sde_window_range[1]
                               or o.sde_window_range[1] + o.sde_window_size > o.num_steps + 1):
        return (f"sde_window_range {o.sde_window_range} must be [low, high) with 0 <= low < high and "
                f"high + sde_window_size <= num_steps + 1 ({o.num_steps + 1})")
    return None


def _grpo_checks(o: GrpoOptions) -> str | None:
    if int(o.num_steps * o.timestep_fraction) < 1:
        return (f"timestep_fraction ({o.timestep_fraction}) x num_steps ({o.num_steps}) trains no transition "
                "(int of the product must be >= 1)")
    return None


_ROLLOUT_RULES = dict(group_size=Range(2), prompts_per_epoch=Range(1), rollout_batch_size=Range(1),
                      num_steps=Range(1), eval_steps=Range(1), eval_every=Range(0), guidance_scale=Range(0), sde=OneOf(*SDE_KINDS),
                      noise_level=Range(0), eta=Range(0), sde_window_size=Range(0), sde_window_range=Range(0))
register(GrpoOptions, **_ROLLOUT_RULES, timestep_fraction=Range(0, 1, low_open=True),
         clip_range=Range(0, low_open=True), adv_clip_max=Range(0, low_open=True), kl_beta=Range(0),
         inner_epochs=Range(1))
register(OnlineDpoOptions, **_ROLLOUT_RULES, ref_update_step=Range(0), timesteps_per_pair=Range(1),
         loss_type=OneOf("sigmoid", "hinge", "ipo", "cdpo", "robust"), label_smoothing=Range(0, 0.5, high_open=True))
for _options in (GrpoOptions, OnlineDpoOptions):
    register_check(_options, _rollout_checks)
register_check(GrpoOptions, _grpo_checks)
register_check(RewardConfig, _reward_checks)
register_check(OnlineDpoOptions, lambda o: None if o.label_smoothing == 0 or o.loss_type in ("cdpo", "robust") else
               f"label_smoothing ({o.label_smoothing}) is read by loss_type cdpo and robust only, not {o.loss_type}")
register(RewardConfig, dtype=OneOf("float32", "float16", "bfloat16"),
         normalize=OneOf("none", "zscore", "rank"), batch_size=Range(1))
