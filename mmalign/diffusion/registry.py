"""The diffusion methods: one entry each, the single source of method names, data kinds and options.

An entry says what the recipe needs to know about a method and nothing else:

* ``data`` — the data kind it reads (pairs | ranked | unpaired preference data; prompts for the online methods,
  which make their own images: :mod:`mmalign.diffusion.online`);
* ``reference`` — whether its loss needs a reference model (LoRA: adapters off; full fine-tuning: a frozen copy);
* ``options`` — its own options dataclass, read from ``method.<name>.*`` of the recipe YAML (every other method's
  section is an error there, :func:`check_method_keys`);
* ``uses`` — which of the shared ``method.*`` keys it reads (``beta``, ``timestep_weight``, ...);
* ``columns`` — row fields it reads besides its kind's (PPD: ``user_id``), read with the one data set;
* ``step`` — ``"module:function"`` of its training step ``step(ctx, policy, batch) -> (loss, metrics)``, imported
  on first use so that this module (and the config schema) import no torch;
* hooks, also ``"module:function"``: ``prepare(cfg, dataset, accelerator)`` before the model is set up (SmPO's
  soft labels), ``training_set`` / ``setup_model`` / ``export`` where a method builds its own (PPD's users);
  null = the shared builders of :mod:`mmalign.diffusion.build` and :mod:`mmalign.diffusion.export`.

Adding a method (docs/adding-a-method.md): an entry (+ options dataclass) here, a step module, a YAML under
``recipes/configs/diffusion/``, a test. The diffusion family of the recipe skeleton
(:class:`mmalign.families.diffusion.Diffusion`, run by :func:`mmalign.recipe.run`), the config schema, the data-kind
and option checks, the CLI and the shipped-config matrix read this table; nothing else names a method.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmalign.config_error import ConfigError
from mmalign.diffusion.options import GrpoOptions, NoiseConfig, OnlineDpoOptions, PpdConfig, SmpoConfig
from mmalign.method_registry import (
    MethodSpecBase,
    check_given_keys,
    chosen_view,
    method_spec_of,
    renamed_option_key,
    sections,
)
from mmalign.validate import OneOf, Range, register, register_check

SHARED_KEYS = ("beta", "timestep_weight", "empty_prompt_prob", "sdxl_time_ids")
"""The ``method.*`` keys every method may read; an entry's ``uses`` names the ones it does."""


@dataclass
class DpoOptions:
    """Diffusion-DPO and DCPO (``method.dpo.*`` / ``method.dcpo.*``)."""

    loss_type: str = "sigmoid"
    """sigmoid | hinge | ipo | cdpo | robust (through mmalign.objectives.preference_loss), all with ``method.beta``
    in the official -(beta/2) convention and h = -(1/2)((e_w - e_l) - (e_ref_w - e_ref_l)): sigmoid
    -logsig(beta h), hinge relu(1 - beta h), ipo (h - 1/(2 beta))^2 (TRL's IPO on scores -e/2; see
    mmalign.diffusion.step_context for the diffusers script's spelling of the same losses); with eps = label_smoothing
    cdpo -(1-eps) logsig(beta h) - eps logsig(-beta h) (conservative DPO, Mitchell 2023) and robust
    [-(1-eps) logsig(beta h) + eps logsig(-beta h)] / (1 - 2 eps) (Chowdhury et al. 2024), TRL's two
    label-noise losses on the Diffusion-DPO scores (no official diffusion code uses them)."""
    label_smoothing: float = 0.0
    """eps: the assumed rate of flipped preference labels, for cdpo and robust only (in [0, 0.5))."""


@dataclass
class SftOptions:
    """Diffusion-SFT (``method.sft.*``)."""

    precondition_outputs: bool = False
    """Flow families (SD3, FLUX) only: the EDM output preconditioning of diffusers' ``train_dreambooth_lora_sd3.py``
    (``--precondition_outputs``, its default 1): the prediction ``x_t - sigma * v`` against ``x0``, i.e. each
    sample's velocity error weighted by ``sigma^2``. Default false (= that script with ``--precondition_outputs 0``,
    and diffusers' FLUX script, which has no such option): SFT is the baseline of the preference methods, so it
    trains the same per-sample velocity error every flow objective here is built on (flow_grpo's
    ``train_sd3_dpo.py``). True reproduces the SD3 DreamBooth script's loss."""


@dataclass
class MapoOptions:
    """MaPO (``method.mapo.*``)."""

    beta: float = 0.1
    """``beta_mapo``, the weight of the margin term against the SFT term (official ``mapo-t2i/mapo`` argparse
    ``--beta_mapo`` default 0.1; not a temperature, so not ``method.beta``)."""
    snr: float = 0.5
    """``s`` in the bounded link g_s(l) = s*l / (exp(s*l) - 1) (official ``--mapo_snr``... ``snr_value`` 0.5)."""


@dataclass
class RankDpoOptions:
    """RankDPO (``method.rankdpo.*``)."""

    rank_source: str = "model"
    """Discount ranking: model (current scores) | label (preference scores)."""


@dataclass
class KtoOptions:
    """Diffusion-KTO (``method.kto.*``)."""

    beta: float = 1000.0
    """Diffusion-KTO's ``beta_dpo`` on ``g = e_ref - e`` (official ``jacklishufan/diffusion-kto``
    ``train_kto_sd_v1.5.py`` argparse default 1000); the step uses ``2 * beta`` on the scores ``-e/2``. Its own
    key: it is not the DPO temperature of ``method.beta`` (same number, different scale)."""
    lambda_desirable: float = 1.0
    lambda_undesirable: float = 1.0
    positive_ratio: float | None = None
    """Sample desirable images with this probability (official WeightedRandomSampler: argparse 0.5, example 0.8;
    see kto_sampling.py); null: every example once per epoch in a random order."""


@dataclass
class InpoOptions:
    """InPO (``method.inpo.*``): Diffusion-DPO with DDIM-inversion noise."""

    noise: NoiseConfig = field(default_factory=lambda: NoiseConfig(provider="ddim", eta=0.1))
    """Noise provider (official InPO: DDIM inversion, ``inversion_eta`` 0.1); see noise_providers.py."""


@dataclass
class MethodConfig:
    """``method:`` of the diffusion recipe: the method, the shared keys, and one section per method's options
    (only ``method.<name>`` of the chosen method may be set: :func:`check_method_keys`)."""

    name: str = "dpo"
    """dpo | sft | mapo | dcpo | rankdpo | kto | smpo | inpo | ppd | grpo | online_dpo (the registry below)."""
    beta: float = 5000.0
    """The preference temperature of the DPO family (official -(beta/2) form; 5000 SD1.5/SDXL, 500 DCPO SD2.1)
    and of the methods built on it (RankDPO, SmPO, InPO, PPD). MaPO's margin weight and KTO's weight are other
    quantities: ``method.mapo.beta`` / ``method.kto.beta``."""
    timestep_weight: str = "none"
    """Per-timestep weight omega(t) multiplying the per-sample error: none (official, 1) | snr_inverse."""
    empty_prompt_prob: float = 0.0
    """Probability of replacing a pair's prompt by "" (official Diffusion-DPO default 0.2)."""
    sdxl_time_ids: str = "constant"
    """SDXL micro-conditioning: constant [res,res,0,0,res,res] (official DPO) | original (image size + crop)."""
    dpo: DpoOptions = field(default_factory=DpoOptions)
    sft: SftOptions = field(default_factory=SftOptions)
    dcpo: DpoOptions = field(default_factory=DpoOptions)
    mapo: MapoOptions = field(default_factory=MapoOptions)
    rankdpo: RankDpoOptions = field(default_factory=RankDpoOptions)
    kto: KtoOptions = field(default_factory=KtoOptions)
    smpo: SmpoConfig = field(default_factory=SmpoConfig)
    """SmPO soft labels (scorer, gamma, winner order) and inversion noise; see soft_labels.py and steps/smpo.py."""
    inpo: InpoOptions = field(default_factory=InpoOptions)
    ppd: PpdConfig = field(default_factory=PpdConfig)
    """PPD user embeddings and user cross-attention (shots, VLM / CLIP source, dropout); see mmalign/diffusion/ppd."""
    grpo: GrpoOptions = field(default_factory=GrpoOptions)
    """Online GRPO (rollouts, group advantages, PPO clip, KL): mmalign/diffusion/online; rewards from ``reward:``."""
    online_dpo: OnlineDpoOptions = field(default_factory=OnlineDpoOptions)
    """Online Diffusion-DPO (best vs worst of each prompt's rollouts, the Diffusion-DPO step)."""


@dataclass
class MethodSpec(MethodSpecBase):
    """One diffusion method (see the module docstring; the key policy's fields: :mod:`mmalign.method_registry`)."""

    name: str
    data: str
    reference: bool
    step: str
    options: type | None = None
    uses: tuple[str, ...] = SHARED_KEYS
    prepare: str | None = None
    training_set: str | None = None
    setup_model: str | None = None
    export: str | None = None
    columns: tuple[str, ...] = ()
    """Row fields the method reads besides the kind's own (PPD: ``user_id``), read with the data set."""
    flow_matching: bool = True
    """Whether the step runs on the flow-matching families (SD3, FLUX); False for steps written for DDPM UNets
    (inversion noise providers, UNet user cross-attention)."""
    summary: str = ""
    ignores: tuple[str, ...] = ()
    """Top-level blocks the method does not read (PPD: ``lora``); setting one is a ConfigError."""

    def hook(self, name: str) -> Callable[..., Any]:
        """The callable of hook ``name`` (``step``, ``prepare``, ``training_set``, ``setup_model``, ``export``),
        or the shared default."""
        target = getattr(self, name) or DEFAULT_HOOKS[name]
        module, function = target.split(":")
        return getattr(importlib.import_module(module), function)


DEFAULT_HOOKS = {
    "training_set": "mmalign.diffusion.build:training_set",
    "setup_model": "mmalign.diffusion.build:prepare_unet",
    "export": "mmalign.diffusion.export:export_model",
}

_STEPS = "mmalign.diffusion.steps"
_PPD = "mmalign.diffusion.ppd.setup"
_ONLINE = "mmalign.diffusion.online"
REGISTRY: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("dpo", "pairs", True, f"{_STEPS}.dpo:dpo_step", DpoOptions,
               summary="Diffusion-DPO: pairs, shared t and noise (Wallace et al. 2024)"),
    MethodSpec("sft", "pairs", False, f"{_STEPS}.sft:sft_step", SftOptions, uses=SHARED_KEYS[1:],
               summary="Diffusion-SFT: the denoising loss on winners only"),
    MethodSpec("mapo", "pairs", False, f"{_STEPS}.mapo:mapo_step", MapoOptions, uses=SHARED_KEYS[1:],
               summary="MaPO: reference-free margin-aware preference optimisation (Hong et al. 2024)"),
    MethodSpec("dcpo", "pairs", True, f"{_STEPS}.dpo:dpo_step", DpoOptions,
               summary="DCPO: Diffusion-DPO with per-side captions (DCPO-T2I)"),
    MethodSpec("rankdpo", "ranked", True, f"{_STEPS}.rankdpo:rankdpo_step", RankDpoOptions,
               summary="RankDPO: k ranked images per prompt, DCG-weighted pairwise DPO (Karthik et al. 2025)"),
    MethodSpec("kto", "unpaired", True, f"{_STEPS}.kto:kto_step", KtoOptions, uses=SHARED_KEYS[1:],
               summary="Diffusion-KTO: unpaired desirable / undesirable images (Li et al. 2024)"),
    MethodSpec("smpo", "pairs", True, f"{_STEPS}.smpo:smpo_step", SmpoConfig,
               prepare="mmalign.diffusion.soft_labels:prepare_soft_labels", flow_matching=False,
               summary="SmPO: scorer-smoothed DPO with ReNoise-inversion noise (Lu et al. 2025)"),
    MethodSpec("inpo", "pairs", True, f"{_STEPS}.inpo:inpo_step", InpoOptions, flow_matching=False,
               summary="InPO: Diffusion-DPO with DDIM-inversion noise (Lu et al. 2025)"),
    MethodSpec("ppd", "pairs", True, "mmalign.diffusion.ppd.step:ppd_step", PpdConfig,
               uses=("beta", "empty_prompt_prob", "sdxl_time_ids"), training_set=f"{_PPD}:ppd_training_set",
               setup_model=f"{_PPD}:ppd_setup_model", export=f"{_PPD}:ppd_export", columns=("user_id",),
               flow_matching=False, ignores=("lora",),
               summary="PPD: personalised DPO with user-conditioned cross-attention (Dang et al. 2025)"),
    MethodSpec("grpo", "prompts", True, f"{_ONLINE}.grpo_step:grpo_step", GrpoOptions, uses=("sdxl_time_ids",),
               training_set=f"{_ONLINE}.setup:online_training_set",
               summary="GRPO: online RL on reward-scored rollouts (Flow-GRPO, DanceGRPO, DDPO)"),
    MethodSpec("online_dpo", "prompts", True, f"{_ONLINE}.dpo_step:online_dpo_step", OnlineDpoOptions,
               uses=("beta", "timestep_weight", "sdxl_time_ids"), training_set=f"{_ONLINE}.setup:online_training_set",
               summary="Online Diffusion-DPO: best vs worst of the policy's own samples (flow_grpo train_sd3_dpo)"),
)}

METHODS = tuple(REGISTRY)
DATA_KINDS = ("pairs", "ranked", "unpaired", "prompts")
ONLINE_KIND = "prompts"
"""The data kind of the online methods: they sample their own images and read the ``reward:`` block."""


def method_spec(name: str) -> MethodSpec:
    """The entry of ``name``; a ConfigError naming ``method.name`` and the registered methods otherwise."""
    return method_spec_of(REGISTRY, name)  # type: ignore[return-value]


def option_sections() -> dict[str, type]:
    """``{section: options dataclass}`` — the ``method.<name>`` sections of :class:`MethodConfig`."""
    return sections(REGISTRY)


def check_method_keys(method: MethodConfig, given: set[str]) -> None:
    """Keys the user set (dotted keys of the YAML and the overrides) that ``method.name`` does not read are a
    ConfigError naming the key and the method (:func:`mmalign.method_registry.check_given_keys`): a key of another
    method's section, a shared key it does not read (``sd15_dpo.yaml method.name=mapo``: ``method.beta`` is the
    DPO temperature, MaPO's weight is ``method.mapo.beta``), a block it ignores (PPD: ``lora``)."""
    check_given_keys(REGISTRY, method.name, given, SHARED_KEYS)


def chosen_sections(config: dict) -> dict:
    """A plain recipe config mapping with only what its method reads (no other method's section, no unread shared
    key, no ignored block): what a saved run config holds, so that it loads again under :func:`check_method_keys`."""
    return chosen_view(REGISTRY, config, SHARED_KEYS)


def switch_method(config: dict, name: str) -> dict:
    """A plain recipe config mapping (a YAML's) switched to method ``name``: what the old method read and the new
    one does not is dropped (``sd15_dpo.yaml``'s ``beta`` for ``mapo``), so it loads under :func:`check_method_keys`
    (benchmarks and tests that run one YAML with several methods)."""
    return chosen_sections({**config, "method": {**(config.get("method") or {}), "name": name}})


def migrate_method_values(raw: dict) -> list[tuple[str, str]]:
    """Old spelling of a YAML written for MaPO or KTO: ``method.beta`` was their weight (``name: mapo`` and
    ``beta: 0.1`` in the same file) and becomes ``method.<name>.beta``, with a note. Only within one mapping: a
    DPO YAML switched on the command line (``sd15_dpo.yaml method.name=mapo``) keeps its DPO temperature and is
    a ConfigError (:func:`check_method_keys`)."""
    method = raw.get("method")
    if not isinstance(method, dict) or method.get("name") not in ("mapo", "kto") or "beta" not in method:
        return []
    name = method["name"]
    section = method.setdefault(name, {}) or {}
    if "beta" in section:
        raise ConfigError(f"config keys 'method.beta' (deprecated for {name}) and 'method.{name}.beta' are both "
                          f"set; keep 'method.{name}.beta'")
    method[name] = {**section, "beta": method.pop("beta")}
    return [("method.beta", f"method.{name}.beta")]


LEGACY_KEYS = {
    "method.loss_type": "loss_type", "method.mapo_snr": "snr", "method.rank_source": "rank_source",
    "method.kto_lambda_desirable": "lambda_desirable", "method.kto_lambda_undesirable": "lambda_undesirable",
    "method.kto_positive_ratio": "positive_ratio", "method.noise.": "noise",
}
"""Flat ``method.*`` keys of the one-block schema (before the registry) and their option name in the method's own
section; ``method.noise.*`` moved to ``method.smpo.noise.*`` / ``method.inpo.noise.*``."""


def renamed_method_key(key: str, raw: dict) -> str | None:
    """The new key of a pre-registry ``method.*`` key (``method.loss_type`` → ``method.dpo.loss_type`` when
    method.name is dpo); a ConfigError when the method has no such option; None for any other key
    (:func:`mmalign.method_registry.renamed_option_key`, the mechanism the VLM and video schemas share)."""
    return renamed_option_key(REGISTRY, LEGACY_KEYS, key, [str((raw.get("method") or {}).get("name", "dpo"))])


_FRACTION = Range(0, 1)
_DTYPES = OneOf("float32", "float16", "bfloat16")
register(DpoOptions, loss_type=OneOf("sigmoid", "hinge", "ipo", "cdpo", "robust"),
         label_smoothing=Range(0, 0.5, high_open=True))
register_check(DpoOptions, lambda o: None if o.label_smoothing == 0 or o.loss_type in ("cdpo", "robust") else
               f"label_smoothing ({o.label_smoothing}) is read by loss_type cdpo and robust only, not {o.loss_type}")
register(MapoOptions, beta=Range(0, low_open=True), snr=Range(0, low_open=True))
register(RankDpoOptions, rank_source=OneOf("model", "label"))
register(KtoOptions, beta=Range(0, low_open=True), lambda_desirable=Range(0), lambda_undesirable=Range(0),
         positive_ratio=Range(0, 1, low_open=True, high_open=True))
register(MethodConfig, name=OneOf(*METHODS), beta=Range(0, low_open=True), timestep_weight=OneOf("none", "snr_inverse"),
         empty_prompt_prob=_FRACTION, sdxl_time_ids=OneOf("constant", "original"))
register(NoiseConfig, provider=OneOf("forward", "ddim", "renoise"), inversion_steps=Range(1), renoise_iters=Range(0),
         eta=Range(0), inversion_model=OneOf("policy", "reference"))
register(SmpoConfig, gamma=Range(0, low_open=True), order=OneOf("scorer", "human"), batch_size=Range(1))
register(PpdConfig, embedding=OneOf("vlm", "clip", "clip_margin"), vlm_dtype=_DTYPES, max_new_tokens=Range(1),
         shots=Range(1), num_tokens=Range(1), init=OneOf("zero", "text"), user_dropout=_FRACTION, seed=Range(0))
