"""The diffusion recipe's config schema (``recipes/diffusion.py``), loaded with :func:`mmalign.config.load_config`.

Beta convention: the official Diffusion-DPO form ``-logsig(-(beta/2) * Delta)`` with element-mean errors
(SalesforceAIResearch/DiffusionDPO ``train.py``), i.e. beta 5000 for SD1.5/SDXL epsilon; the diffusers SD1.5
script's 2500 (without the 1/2) is the same loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.config import MISSING
from mmalign.diffusion.noise_providers import NoiseConfig
from mmalign.diffusion.ppd.config import PpdConfig
from mmalign.diffusion.soft_labels import SmpoConfig
from mmalign.train import TrainConfig
from mmalign.validate import OneOf, Range, output_dir_problem, register, register_check


@dataclass
class ModelConfig:
    pretrained: str = MISSING
    """Hub id or local diffusers pipeline folder (SD1.x, SD2.x, SDXL, SD3/SD3.5, FLUX.1)."""
    revision: str | None = None
    """Hub revision (ignored for local folders)."""
    prediction_type: str | None = None
    """Override the scheduler's prediction type: epsilon | v_prediction | flow (null: read from the scheduler)."""
    attention: str = "sdpa"
    """sdpa (PyTorch scaled_dot_product_attention) | xformers | auto (xformers when a working build is found)."""
    gradient_checkpointing: bool = False
    """Recompute UNet activations in the backward pass (less memory, ~+1/3 step time)."""
    compile: bool = False
    """torch.compile the UNet forward."""
    channels_last: bool = False
    """Use channels-last memory format for the UNet (faster convolutions on GPU)."""
    vae_dtype: str = "float32"
    """dtype of the VAE when encoding (the SDXL VAE produces NaNs in fp16; keep float32 unless fp16-fixed)."""
    weighting_scheme: str = "logit_normal"
    """SD3/FLUX: timestep density and loss weight as diffusers' SD3/FLUX scripts (compute_density_for_timestep_
    sampling / compute_loss_weighting_for_sd3): logit_normal | mode | uniform | sigma_sqrt | cosmap."""
    logit_mean: float = 0.0
    """SD3/FLUX logit_normal mean."""
    logit_std: float = 1.0
    """SD3/FLUX logit_normal std."""
    mode_scale: float = 1.29
    """SD3/FLUX ``mode`` scheme scale."""
    guidance: float = 3.5
    """FLUX guidance-distilled checkpoints (FLUX.1-dev): guidance-embedding value in training."""
    max_sequence_length: int | None = None
    """SD3/FLUX T5 tokens (null: 256 SD3, 512 FLUX: the pipelines' defaults, what validation sampling uses)."""


@dataclass
class LoraConfig:
    rank: int = 8
    """LoRA rank; 0 means full fine-tuning of the UNet (frozen reference copy)."""
    alpha: float | None = None
    """LoRA alpha (null: equal to rank, as in the diffusers DPO scripts)."""
    target_modules: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    """UNet sub-modules that get adapters."""
    init: str = "gaussian"
    """peft ``init_lora_weights``: gaussian (diffusers DPO scripts) | true (kaiming A, zero B)."""
    dropout: float = 0.0


@dataclass
class MethodConfig:
    name: str = "dpo"
    """dpo | sft | mapo | dcpo | rankdpo | kto | smpo | inpo | ppd."""
    beta: float = 5000.0
    """DPO-family temperature (official -(beta/2) form; 5000 SD1.5/SDXL, 500 DCPO SD2.1), MaPO beta (0.1),
    KTO beta (1000)."""
    loss_type: str = "sigmoid"
    """dpo/dcpo: sigmoid | hinge | ipo (through mmalign.objectives.preference_loss), all with ``beta`` in the
    official -(beta/2) convention and h = -(1/2)((e_w - e_l) - (e_ref_w - e_ref_l)): sigmoid -logsig(beta h),
    hinge relu(1 - beta h), ipo (h - 1/(2 beta))^2 (TRL's IPO on scores -e/2). The diffusers script's lines use
    logits = 2h with its own beta_dpo = beta/2: its sigmoid and hinge are the same losses, its ipo line
    (logits - 1/(2 beta_dpo))^2 = 4 (h - 1/(2 beta)) ^ 2 (same minimiser h* = 1/(2 beta), 4x the loss); see
    mmalign.diffusion.methods."""
    mapo_snr: float = 0.5
    """MaPO ``s`` in the bounded link g_s(l) = s*l / (exp(s*l) - 1)."""
    rank_source: str = "model"
    """RankDPO discount ranking: model (current scores) | label (preference scores)."""
    kto_lambda_desirable: float = 1.0
    kto_lambda_undesirable: float = 1.0
    kto_positive_ratio: float | None = None
    """kto: sample desirable images with this probability (official WeightedRandomSampler: argparse 0.5, example
    0.8; see kto_sampling.py); null: every example once per epoch in a random order."""
    timestep_weight: str = "none"
    """Per-timestep weight omega(t) multiplying the per-sample error: none (official, 1) | snr_inverse."""
    empty_prompt_prob: float = 0.0
    """Probability of replacing a pair's prompt by "" (official Diffusion-DPO default 0.2)."""
    sdxl_time_ids: str = "constant"
    """SDXL micro-conditioning: constant [res,res,0,0,res,res] (official DPO) | original (image size + crop)."""
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    """Noise provider: forward (shared Gaussian) | ddim / renoise inversion (smpo, inpo); see noise_providers.py."""
    smpo: SmpoConfig = field(default_factory=SmpoConfig)
    """SmPO soft labels (scorer, gamma, winner order); see soft_labels.py and smpo.py."""
    ppd: PpdConfig = field(default_factory=PpdConfig)
    """PPD user embeddings and user cross-attention (shots, VLM / CLIP source, dropout); see mmalign/diffusion/ppd."""


@dataclass
class DataConfig:
    path: str = MISSING
    """Preference data: folder, file or hub id (read by mmalign.data.load_preference_data)."""
    kind: str | None = None
    """pairs | ranked | unpaired (null: pairs, or as the method requires)."""
    resolution: int = 512
    """Images are resized (shorter side) and center-cropped to this size."""
    random_flip: bool = False
    """Horizontal flip with p=0.5 (the official DiffusionDPO/SmPO/InPO/DCPO trainers flip; not the toy world, whose
    captions say left/right). With the cache both orientations are encoded and stored (2x the cache)."""
    flip_mode: str = "pair"
    """per_image (each image its own draw: the official trainers' per-image RandomHorizontalFlip) | pair (one draw
    per item: the diffusers SDXL script); see mmalign/diffusion/flips.py."""
    cache: bool = True
    """Cache VAE latents and text embeddings on disk (keyed by content hash, model and resolution)."""
    cache_dir: str | None = None
    """Cache root (null: $MMALIGN_CACHE/diffusion or ~/.cache/mmalign/diffusion)."""
    cache_dtype: str = "float32"
    """dtype of cached tensors: float32 | float16 | bfloat16."""
    latent_sample: str = "sample"
    """sample (posterior sample each step, as the official code) | mean (posterior mean)."""
    max_skip_fraction: float = 0.05
    """Stop when more than this fraction of samples is corrupt (they are skipped and counted)."""
    limit: int | None = None
    """Use only the first N examples."""
    allow_outside_paths: bool = False
    """Read image paths of jsonl/csv rows that resolve outside the data file's folder (absolute paths, ``../``,
    symlinks out of it); false: such a row is an error naming file, line and field."""


@dataclass
class ValidationConfig:
    prompts: list[str] = field(default_factory=list)
    """Prompts rendered every ``every`` steps (and once with the reference model)."""
    every: int = 0
    """Validation interval in optimizer steps (0: only at the end; no prompts: never)."""
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    seed: int = 0
    height: int | None = None
    """Image size (null: data.resolution)."""
    scorer: str | None = None
    """Score validation images with this scorer (scorers.load_scorer name: hpsv2.1, pickscore, toy, ...)."""
    scorer_checkpoint: str | None = None
    """Checkpoint for the scorer (null: the scorer card's default)."""


@dataclass
class ExportConfig:
    enabled: bool = True
    """Write the final model into output_dir (LoRA: pytorch_lora_weights.safetensors; full FT: a pipeline)."""
    ema: bool = False
    """Full fine-tuning: keep an EMA of the UNet and export it."""
    ema_decay: float = 0.9999


@dataclass
class ToyEvalConfig:
    """Judge-based evaluation of base vs aligned after training (:mod:`mmalign.diffusion.toy_eval`)."""

    enabled: bool = False
    """After training, on the main process: sample the base model (LoRA adapters disabled / the frozen reference
    copy / the UNet re-read from model.pretrained) and the aligned model on the same captions and seeds, score every
    image with the toy world's judge (mmalign.toy.evaluate), print a table, write summary.json["toy_eval"] and the
    side-by-side grid <output_dir>/toy_eval/side_by_side.png (base | aligned)."""
    captions: str = "heldout"
    """Caption source: heldout (the toy world's held-out split, 108 captions never seen in training: the default),
    all (all 180 captions of the grammar), or a text file with one caption per line (toy grammar)."""
    max_captions: int | None = None
    """Use only the first N captions (null: all of them)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Sampling seeds; every caption is sampled once per seed (the seed-to-seed std is over these)."""
    num_inference_steps: int = 20
    """Sampler steps (the pipeline's own scheduler)."""
    guidance_scale: float = 3.0
    """Classifier-free guidance scale."""
    batch_size: int = 64
    """Images per pipeline call."""
    grid_rows: int = 6
    """Rows of the side-by-side grid (each row holds grid_columns base | aligned pairs)."""
    grid_columns: int = 4
    """(caption, seed) pairs per grid row."""
    save_images: bool = False
    """Also write every sampled image: <output_dir>/toy_eval/images.npz (base, aligned: uint8 (N, H, W, 3))."""


@dataclass
class DiffusionRecipeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    toy_eval: ToyEvalConfig = field(default_factory=ToyEvalConfig)
    """Optional toy-world evaluation of base vs aligned on held-out captions (the main job's quality report)."""
    output_dir: str = "outputs/diffusion"
    """Where checkpoints, logs, validation grids, the exported model and summary.json go."""
    note: str = ""
    """Free text copied into summary.json (e.g. what the run is for)."""


METHODS = ("dpo", "sft", "mapo", "dcpo", "rankdpo", "kto", "smpo", "inpo", "ppd")
DATA_KIND = {"dpo": "pairs", "sft": "pairs", "mapo": "pairs", "dcpo": "pairs", "rankdpo": "ranked", "kto": "unpaired",
             "smpo": "pairs", "inpo": "pairs", "ppd": "pairs"}
REFERENCE_FREE = ("sft", "mapo")


# Ranges and choices, checked by load_config before any model loads (mmalign.validate).
_FRACTION = Range(0, 1)
_DTYPES = OneOf("float32", "float16", "bfloat16")
register(ModelConfig, prediction_type=OneOf("epsilon", "v_prediction", "flow"),
         attention=OneOf("sdpa", "xformers", "auto"), vae_dtype=OneOf("float32", "float16", "bfloat16", "weight"),
         weighting_scheme=OneOf("logit_normal", "mode", "uniform", "sigma_sqrt", "cosmap"),
         logit_std=Range(0, low_open=True), guidance=Range(0), max_sequence_length=Range(1))
register(LoraConfig, rank=Range(0), alpha=Range(0, low_open=True), init=OneOf("gaussian", "true", "True"),
         dropout=Range(0, 1, high_open=True))
register(MethodConfig, name=OneOf(*METHODS), beta=Range(0, low_open=True), loss_type=OneOf("sigmoid", "hinge", "ipo"),
         mapo_snr=Range(0, low_open=True), rank_source=OneOf("model", "label"), kto_lambda_desirable=Range(0),
         kto_lambda_undesirable=Range(0), timestep_weight=OneOf("none", "snr_inverse"), empty_prompt_prob=_FRACTION,
         sdxl_time_ids=OneOf("constant", "original"))
register(DataConfig, kind=OneOf(*sorted(set(DATA_KIND.values()))), resolution=Range(8, multiple=8),
         cache_dtype=_DTYPES, latent_sample=OneOf("sample", "mean"), max_skip_fraction=_FRACTION, limit=Range(1))
register(ValidationConfig, every=Range(0), num_inference_steps=Range(1), guidance_scale=Range(0), seed=Range(0),
         height=Range(8, multiple=8))
register(ExportConfig, ema_decay=_FRACTION)
register(ToyEvalConfig, max_captions=Range(1), seeds=Range(0), num_inference_steps=Range(1), guidance_scale=Range(0),
         batch_size=Range(1), grid_rows=Range(1), grid_columns=Range(1))
register(NoiseConfig, provider=OneOf("forward", "ddim", "renoise"), inversion_steps=Range(1), renoise_iters=Range(0),
         eta=Range(0), inversion_model=OneOf("policy", "reference"))
register(SmpoConfig, gamma=Range(0, low_open=True), order=OneOf("scorer", "human"), batch_size=Range(1))
register(PpdConfig, embedding=OneOf("vlm", "clip", "clip_margin"), vlm_dtype=_DTYPES, max_new_tokens=Range(1),
         shots=Range(1), num_tokens=Range(1), init=OneOf("zero", "text"), user_dropout=_FRACTION, seed=Range(0))
register_check(DiffusionRecipeConfig, lambda c: output_dir_problem(c.output_dir))
