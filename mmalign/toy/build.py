"""``python -m mmalign.toy build``: rebuild every toy asset deterministically from seeds.

Stages (each seeded; torch runs with ``threads`` CPU threads, default 1, so a rebuild with the same library
versions and thread count gives the same weights):

1. captions: the 72 / 108 train / held-out split (``captions.caption_split``) → ``captions/*.txt``;
2. pipeline: a frozen random tiny CLIP text encoder with the real CLIP tokenizer; the VAE trained on renders; the
   UNet trained on (caption, render) pairs with caption noise (``train_diffusion``), saved with
   ``save_pretrained(safe_serialization=True)`` → ``pipeline/`` and reloaded from disk for everything below;
3. samples from the base pipeline: ``samples_per_train_caption`` per training caption (preference data) and
   ``samples_per_heldout_caption`` per held-out caption (evaluation and the scorer's held-out pairs);
4. preference data labelled by the judge (``prefdata``) → ``data/``;
5. the toy scorer (``train_scorer``): contrastive on renders with hard negatives, then HPS-style pair fine-tuning
   on the training-caption pairs → ``scorer/HPS_toy_compressed.pt``;
6. measurements → ``build_report.json``: judge means of renders / base samples / mismatched-caption baseline on
   held-out captions, and the toy scorer's Pick-a-Pic pairwise accuracy on held-out judge-labelled pairs
   (loaded through ``scorers.load_scorer("toy")``).

Why a frozen random text encoder: it keeps the build cheap and deterministic, and the UNet's cross-attention learns
to read its (well separated) token features; preference training (LoRA on the UNet) never touches it either.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import models, paths, prefdata, train_diffusion, train_scorer
from .captions import all_captions, caption_split
from .evaluate import score_images
from .render import render_batch
from .sampling import DEFAULT_GUIDANCE, DEFAULT_STEPS, sample_images


@dataclass
class BuildSettings:
    seed: int = 0
    """Master seed (every stage derives its own from it)."""
    vae_images: int = 2048
    """Renders the VAE trains on."""
    vae_steps: int = 1600
    """VAE optimisation steps (400 left reconstructions whose colours the judge scored 0.40, which capped every
    model trained on its latents)."""
    vae_batch_size: int = 16
    vae_lr: float = 3e-3
    vae_kl_weight: float = 1e-6
    unet_images: int = 4096
    """Renders the UNet trains on."""
    unet_steps: int = 1600
    """UNet optimisation steps (few on purpose: an under-trained base leaves headroom; 400 left a base that barely
    followed captions, judge 0.017 on held-out captions; 1600 gives 0.080 with shapes mostly right, colours and
    positions rarely: the UNet learns the image distribution long before it reads colour / position from the
    frozen text encoder; 300 more steps on clean captions did not change that)."""
    unet_batch_size: int = 32
    unet_lr: float = 1.5e-3
    caption_noise: float = 0.3
    """Probability that a training caption has one attribute replaced (deliberate imperfection)."""
    uncond_prob: float = 0.1
    """Probability of the empty prompt during UNet training (classifier-free guidance)."""
    samples_per_train_caption: int = 6
    samples_per_heldout_caption: int = 2
    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    scorer_images: int = 4096
    scorer_steps: int = 300
    scorer_batch_size: int = 64
    scorer_lr: float = 1e-3
    scorer_pair_steps: int = 150
    scorer_pair_batch_size: int = 32
    scorer_pair_lr: float = 2e-4
    threads: int = 1
    """torch CPU threads (results are reproducible for a fixed thread count; 1 copes best with a busy machine)."""
    max_heldout_captions: int | None = None
    """Use only the first N held-out captions (quick builds)."""
    max_train_captions: int | None = None
    """Use only the first N training captions (quick builds)."""


QUICK = BuildSettings(vae_images=128, vae_steps=4, vae_batch_size=8, unet_images=128, unet_steps=4, unet_batch_size=8,
                      samples_per_train_caption=4, samples_per_heldout_caption=2, num_inference_steps=2,
                      scorer_images=128, scorer_steps=3, scorer_batch_size=8, scorer_pair_steps=2,
                      scorer_pair_batch_size=4, max_heldout_captions=8, max_train_captions=6)


def _log(msg: str) -> None:
    print(f"[toy build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def build_pipeline(out: Path, s: BuildSettings, report: dict) -> None:
    from diffusers import StableDiffusionPipeline

    tmp_tok = out / "_tokenizer_tmp"
    tokenizer = models.make_tokenizer(tmp_tok)
    text_encoder = models.make_text_encoder(s.seed + 1, tokenizer)
    _, vae_imgs = train_diffusion.random_renders(s.vae_images, s.seed + 2)
    vae = models.make_vae(s.seed + 3)
    t0 = time.time()
    report.update(train_diffusion.train_vae(vae, vae_imgs, steps=s.vae_steps, batch_size=s.vae_batch_size,
                                            lr=s.vae_lr, kl_weight=s.vae_kl_weight, seed=s.seed + 4, log=_log))
    report["vae_seconds"] = round(time.time() - t0, 1)
    report.update(vae_reconstruction_judge(vae, s.seed + 14))
    _log(f"VAE reconstructions, judge: {report['judge_vae_reconstruction']:.3f} "
         f"{json.dumps(report['judge_vae_reconstruction_terms'])}")
    caps, unet_imgs = train_diffusion.random_renders(s.unet_images, s.seed + 5)
    unet = models.make_unet(s.seed + 6)
    t0 = time.time()
    report.update(train_diffusion.train_unet(
        unet, vae, text_encoder, tokenizer, models.make_training_scheduler(), caps, unet_imgs, steps=s.unet_steps,
        batch_size=s.unet_batch_size, lr=s.unet_lr, caption_noise=s.caption_noise, uncond_prob=s.uncond_prob,
        seed=s.seed + 7, log=_log))
    report["unet_seconds"] = round(time.time() - t0, 1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=models.make_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    target = out / paths.PIPELINE
    if target.exists():
        shutil.rmtree(target)
    pipe.save_pretrained(target, safe_serialization=True)
    shutil.rmtree(tmp_tok)


@torch.no_grad()
def vae_reconstruction_judge(vae, seed: int, n: int = 256) -> dict:
    """The judge on VAE reconstructions of ``n`` fresh renders: the ceiling of any model decoding through it."""
    caps, imgs = train_diffusion.random_renders(n, seed)
    x = train_diffusion.to_model_space(imgs)
    recon = torch.cat([vae.decode(vae.encode(x[i:i + 64]).latent_dist.mean).sample for i in range(0, n, 64)])
    recon_u8 = ((recon.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    result = score_images(recon_u8, caps)
    return {"judge_vae_reconstruction": result["mean"], "judge_vae_reconstruction_terms": result["terms"]}


def load_pipeline(folder: Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _samples(pipe, captions: list[str], k: int, seed_base: int, s: BuildSettings) -> tuple[list[str], np.ndarray]:
    caps = [c for c in captions for _ in range(k)]
    seeds = [seed_base + i for i in range(len(caps))]
    return caps, sample_images(pipe, caps, seeds, num_inference_steps=s.num_inference_steps,
                               guidance_scale=s.guidance_scale)


def build_scorer(out: Path, s: BuildSettings, report: dict, train_pairs: tuple) -> None:
    import open_clip

    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=77)
    model = models.make_scorer(s.seed + 8)
    caps, imgs = train_diffusion.random_renders(s.scorer_images, s.seed + 9)
    t0 = time.time()
    report.update(train_scorer.train_contrastive(model, tokenizer, caps, imgs, steps=s.scorer_steps,
                                                 batch_size=s.scorer_batch_size, lr=s.scorer_lr, seed=s.seed + 10,
                                                 log=_log))
    if s.scorer_pair_steps > 0 and len(train_pairs[3]) > 0:
        report.update(train_scorer.train_preference(model, tokenizer, *train_pairs, steps=s.scorer_pair_steps,
                                                    batch_size=s.scorer_pair_batch_size, lr=s.scorer_pair_lr,
                                                    seed=s.seed + 11, log=_log))
    report["scorer_seconds"] = round(time.time() - t0, 1)
    train_scorer.save_hps_checkpoint(model, out / paths.SCORER_CHECKPOINT)


def scorer_pairwise_accuracy(checkpoint: Path, pairs_file: Path) -> dict[str, float]:
    """Pick-a-Pic pairwise accuracy (spec scorers.md §8.3, threshold 0: no predicted ties; the pairs have no GT
    ties) of the ``toy`` scorer card loaded through ``scorers.load_scorer`` on a judge-labelled pair file."""
    import io

    import pyarrow.parquet as pq
    from PIL import Image

    import scorers
    from scorers.accuracy import pickapic_accuracy

    table = pq.read_table(pairs_file).to_pydict()
    scorer = scorers.load_scorer("toy", checkpoint=checkpoint)
    im0 = [Image.open(io.BytesIO(b)).convert("RGB") for b in table["jpg_0"]]
    im1 = [Image.open(io.BytesIO(b)).convert("RGB") for b in table["jpg_1"]]
    s0, s1 = scorer.score(im0, table["caption"], raw=True), scorer.score(im1, table["caption"], raw=True)
    scale = float(scorer.logit_scale)
    p = torch.softmax(torch.stack([s0, s1], dim=1).double() * scale, dim=1)
    return {"scorer_heldout_pairs": len(s0),
            "scorer_heldout_pairwise_accuracy": pickapic_accuracy(p[:, 0], p[:, 1], table["label_0"], threshold=0.0)}


def build(out: str | Path, settings: BuildSettings | None = None, reuse_pipeline: bool = False) -> dict:
    """Rebuild every toy asset into ``out`` (``reuse_pipeline``: keep an existing ``pipeline/`` and redo the
    stages after it); returns (and writes) the build report."""
    s = settings or BuildSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(s.threads)
    start = time.time()
    report: dict = {"settings": dataclasses.asdict(s)}
    train, heldout = caption_split()
    _write_lines(out / paths.TRAIN_CAPTIONS, train)
    _write_lines(out / paths.HELDOUT_CAPTIONS, heldout)
    train = train[:s.max_train_captions] if s.max_train_captions else train
    heldout = heldout[:s.max_heldout_captions] if s.max_heldout_captions else heldout

    if reuse_pipeline and (out / paths.PIPELINE / "model_index.json").is_file():
        _log(f"reusing the pipeline in {out / paths.PIPELINE}")
    else:
        _log("training the pipeline (VAE, then UNet)")
        build_pipeline(out, s, report)
    pipe = load_pipeline(out / paths.PIPELINE)

    _log("sampling the base pipeline")
    t0 = time.time()
    train_caps, train_imgs = _samples(pipe, train, s.samples_per_train_caption, 1_000_000, s)
    held_caps, held_imgs = _samples(pipe, heldout, s.samples_per_heldout_caption, 2_000_000, s)
    report["sampling_seconds"] = round(time.time() - t0, 1)

    _log("writing judge-labelled preference data")
    data = out / paths.DATA
    if data.exists():
        shutil.rmtree(data)
    report.update(prefdata.write_preference_data(data, train_caps, train_imgs, s.samples_per_train_caption,
                                                 s.seed + 12))
    report.update(prefdata.write_heldout_pairs(data, held_caps, held_imgs, s.samples_per_heldout_caption))

    _log("training the toy scorer")
    k = s.samples_per_train_caption
    pairs = [(i, j) for i, j in prefdata.cyclic_pairs(len(train), k)]
    scores = torch.tensor(score_images(train_imgs, train_caps)["scores"])
    labels = np.array([prefdata._label(float(scores[i]), float(scores[j])) for i, j in pairs])
    keep = [n for n, lab in enumerate(labels) if lab != 0.5]
    train_pairs = ([train_caps[pairs[n][0]] for n in keep], train_imgs[[pairs[n][0] for n in keep]],
                   train_imgs[[pairs[n][1] for n in keep]], labels[keep])
    build_scorer(out, s, report, train_pairs)

    _log("measuring")
    rng = np.random.default_rng(s.seed + 13)
    vocabulary = all_captions()
    mismatched = [vocabulary[int(rng.integers(len(vocabulary)))] for _ in held_caps]
    renders = render_batch(held_caps, [3_000_000 + i for i in range(len(held_caps))])
    report.update({
        "heldout_captions": len(heldout), "heldout_images": len(held_caps),
        "judge_renders_heldout": score_images(renders, held_caps)["mean"],
        "judge_base_heldout": score_images(held_imgs, held_caps)["mean"],
        "judge_base_heldout_terms": score_images(held_imgs, held_caps)["terms"],
        "judge_base_mismatched_caption": score_images(held_imgs, mismatched)["mean"],
    })
    try:
        report.update(scorer_pairwise_accuracy(out / paths.SCORER_CHECKPOINT, data / "heldout_pairs.parquet"))
    except Exception as exc:  # noqa: BLE001 - the scorers package or its toy card may not be there yet
        report["scorer_heldout_pairwise_accuracy_error"] = f"{type(exc).__name__}: {exc}"
    report["total_seconds"] = round(time.time() - start, 1)
    (out / paths.BUILD_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    _log(f"done in {report['total_seconds']} s: " + json.dumps(
        {k: v for k, v in report.items() if k.startswith(("judge", "scorer_heldout"))}))
    return report
