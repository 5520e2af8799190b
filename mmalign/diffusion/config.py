"""The diffusion recipe's config schema (``recipes/diffusion.py``), loaded with :func:`mmalign.config.load_config`.

Beta convention: the official Diffusion-DPO form ``-logsig(-(beta/2) * Delta)`` with element-mean errors
(SalesforceAIResearch/DiffusionDPO ``train.py``), i.e. beta 5000 for SD1.5/SDXL epsilon; the diffusers SD1.5
script's 2500 (without the 1/2) is the same loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.choices import ON_BAD_ROW
from mmalign.config_blocks import DTYPES, DataConfig, EvalConfig, ExportConfig, ModelConfig, renamed_block_key
from mmalign.config_error import ConfigError
from mmalign.diffusion.flow_options import FlowOptions
from mmalign.diffusion.options import RewardConfig
from mmalign.diffusion.registry import (
    DATA_KINDS,
    METHODS,
    ONLINE_KIND,
    REGISTRY,
    MethodConfig,
    check_method_keys,
    chosen_sections,
    migrate_method_values,
    renamed_method_key,
)
from mmalign.lora_config import LoraConfig, diffusion_lora
from mmalign.train_config import TrainConfig
from mmalign.validate import OneOf, Range, output_dir_problem, register, register_check

__all__ = ["METHODS", "MethodConfig", "DiffusionRecipeConfig"]


@dataclass
class DiffusionModelConfig(ModelConfig, FlowOptions):
    """The ``model:`` block: the shared keys (:class:`mmalign.config_blocks.ModelConfig`: ``pretrained`` — a hub id
    or local diffusers pipeline folder of SD1.x, SD2.x, SDXL, SD3/SD3.5, FLUX.1 —, ``dtype`` of the frozen UNet and
    text encoders, ``attn_implementation``: sdpa | xformers | auto, ``gradient_checkpointing``); the SD3 / FLUX keys
    (``weighting_scheme``, ``logit_mean``, ``logit_std``, ``mode_scale``, ``guidance``, ``max_sequence_length``) come
    from :class:`~mmalign.diffusion.flow_options.FlowOptions`."""

    revision: str | None = None
    """Hub revision (ignored for local folders)."""
    prediction_type: str | None = None
    """Override the scheduler's prediction type: epsilon | v_prediction | flow (null: read from the scheduler)."""
    compile: bool = False
    """torch.compile the UNet forward."""
    channels_last: bool = False
    """Use channels-last memory format for the UNet (faster convolutions on GPU)."""
    vae_dtype: str = "float32"
    """dtype of the VAE when encoding (the SDXL VAE produces NaNs in fp16; keep float32 unless fp16-fixed)."""


@dataclass
class DiffusionDataConfig(DataConfig):
    """The ``data:`` block: the shared keys (:class:`mmalign.config_blocks.DataConfig`; ``path``: folder, file or hub
    id read by mmalign.data.load_preference_data, or for the online methods (data kind prompts) a .txt / .jsonl of
    prompts or a folder with train.* / test.* (mmalign.data.prompts); ``media_root`` is not read here: image paths
    resolve against the data file's folder) and the diffusion readers' own."""

    kind: str | None = None
    """pairs | ranked | unpaired | prompts (null: as the method requires)."""
    test_fraction: float = 0.0
    """prompts: the last fraction of the prompts held out (when the data has no test file) for the end-of-run
    reward on unseen prompts."""
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
class DiffusionExportConfig(ExportConfig):
    """The ``export:`` block: LoRA → ``<output_dir>/pytorch_lora_weights.safetensors``; full fine-tuning → a
    pipeline folder in ``output_dir``."""

    ema: bool = False
    """Full fine-tuning: keep an EMA of the UNet and export it."""
    ema_decay: float = 0.9999


@dataclass
class DiffusionEvalConfig(EvalConfig):
    """The ``eval:`` block: judge-based evaluation of base vs aligned after training (:mod:`mmalign.toy.diffusion_eval`)."""

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
    model: DiffusionModelConfig = field(default_factory=DiffusionModelConfig)
    data: DiffusionDataConfig = field(default_factory=DiffusionDataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    lora: LoraConfig = field(default_factory=diffusion_lora)
    """The shared LoRA block (:mod:`mmalign.lora_config`): rank 0 = full fine-tuning of the UNet."""
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    export: DiffusionExportConfig = field(default_factory=DiffusionExportConfig)
    eval: DiffusionEvalConfig = field(default_factory=DiffusionEvalConfig)
    """Optional toy-world evaluation of base vs aligned on held-out captions (the main job's quality report)."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """The reward of the online methods (grpo, online_dpo): a weighted sum of scorers (mmalign/diffusion/online)."""
    output_dir: str = "outputs/diffusion"
    """Where checkpoints, logs, validation grids, the exported model and summary.json go."""
    note: str = ""
    """Free text copied into summary.json (e.g. what the run is for)."""

    def as_dict(self) -> dict:
        """A plain dict of the config with only the chosen method's options section (the saved run config)."""
        from dataclasses import asdict

        out = chosen_sections(asdict(self))
        if REGISTRY[self.method.name].data != ONLINE_KIND:
            out.pop("reward", None)  # offline methods read no reward block
        return out

    @staticmethod
    def renamed_key(key: str, raw: dict) -> str | None:
        """Keys renamed in the one-core release (read for one release): the pre-registry ``method.*`` keys
        (``method.loss_type`` → ``method.dpo.loss_type``, ...: registry.py), ``data.max_skip_fraction``, and the spellings of the
        shared blocks (``model.attention``, ``data.limit``, ``toy_eval``: :func:`mmalign.config_blocks.renamed_block_key`)."""
        return (renamed_method_key(key, raw) or {"data.max_skip_fraction": "data.max_bad_fraction"}.get(key)
                or renamed_block_key(key))

    @staticmethod
    def migrate(raw: dict) -> list[tuple[str, str]]:
        """Old values: ``method.beta`` of a MaPO / KTO YAML → ``method.<name>.beta`` (registry.py)."""
        return migrate_method_values(raw)

    @staticmethod
    def check_given(cfg: DiffusionRecipeConfig, given: set[str]) -> None:
        """Options the chosen method does not read are a ConfigError naming the key (registry.py); so is a
        ``reward.*`` key for an offline method."""
        check_method_keys(cfg.method, given)
        online = REGISTRY[cfg.method.name].data == ONLINE_KIND
        default = RewardConfig()
        changed = sorted(k for k in given if k.split(".")[0] == "reward" and len(k.split(".")) > 1
                         and getattr(cfg.reward, k.split(".")[1], None) != getattr(default, k.split(".")[1], None))
        if not online and (keys := changed):
            raise ConfigError(f"config key '{keys[0]}' is read by the online methods only "
                              f"({', '.join(m for m in METHODS if REGISTRY[m].data == ONLINE_KIND)}), "
                              f"not by method '{cfg.method.name}'")


# Ranges and choices, checked by load_config before any model loads (mmalign.validate).
MAX_RESOLUTION = 4096
"""Twice the largest native size of the supported models (FLUX.1: 2048); ``data.resolution=100000`` asked the VAE for
a 10^10-pixel image (MemoryError after minutes)."""
_FRACTION = Range(0, 1)
_DTYPES = OneOf("float32", "float16", "bfloat16")
register(DiffusionModelConfig, prediction_type=OneOf("epsilon", "v_prediction", "flow"), dtype=OneOf(*DTYPES),
         attn_implementation=OneOf("sdpa", "xformers", "auto"), vae_dtype=OneOf("float32", "float16", "bfloat16", "weight"),
         weighting_scheme=OneOf("logit_normal", "mode", "uniform", "sigma_sqrt", "cosmap"),
         logit_std=Range(0, low_open=True), guidance=Range(0), max_sequence_length=Range(1))
register(DiffusionDataConfig, kind=OneOf(*DATA_KINDS), resolution=Range(8, MAX_RESOLUTION, multiple=8),
         cache_dtype=_DTYPES, latent_sample=OneOf("sample", "mean"), on_bad_row=OneOf(*ON_BAD_ROW), max_bad_fraction=_FRACTION,
         max_rows=Range(1))
register(ValidationConfig, every=Range(0), num_inference_steps=Range(1), guidance_scale=Range(0), seed=Range(0),
         height=Range(8, MAX_RESOLUTION, multiple=8))
register(DiffusionExportConfig, ema_decay=_FRACTION)
register(DiffusionEvalConfig, max_captions=Range(1), seeds=Range(0), num_inference_steps=Range(1), guidance_scale=Range(0),
         batch_size=Range(1), grid_rows=Range(1), grid_columns=Range(1))
register(DiffusionDataConfig, test_fraction=Range(0, 1, high_open=True))
register_check(DiffusionRecipeConfig, lambda c: output_dir_problem(c.output_dir))


def _online_problem(c: DiffusionRecipeConfig) -> str | None:
    if c.method.name not in REGISTRY or REGISTRY[c.method.name].data != ONLINE_KIND:
        return None
    if not c.reward.scorers:
        return (f"method '{c.method.name}' learns from a reward: set reward.scorers (e.g. {{pickscore: 1.0}}; "
                "scorer names from scorers/cards)")
    if c.train.num_workers:
        return (f"train.num_workers ({c.train.num_workers}) must be 0 for method '{c.method.name}': its rollouts "
                "are made in the training process")
    if c.data.kind not in (None, ONLINE_KIND):
        return f"data.kind ('{c.data.kind}'): method '{c.method.name}' reads prompts"
    return None


register_check(DiffusionRecipeConfig, _online_problem)
