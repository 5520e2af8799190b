"""The rollout phase of an online method and the loop's view of it (package docstring: how an epoch runs).

:class:`EpochSlots` is the data set the shared loop iterates: ``len`` slots per epoch, ``set_epoch`` called by the
loop's data loader, each micro-batch collated into ``{"online": engine, "epoch": e, "slots": LongTensor, "groups":
n}``.
:class:`OnlineEngine` makes and holds the epoch's rollouts (``ensure(epoch, policy)``), logs the epoch's reward
statistics, and is registered with the Accelerator so that the rollouts are saved with each checkpoint.

Rollouts are made by the method's ``collect`` function (GRPO: :func:`mmalign.diffusion.online.grpo_step.collect`,
online DPO: :func:`mmalign.diffusion.online.dpo_step.collect`) in ``no_grad`` and eval mode, with noise from
generators seeded by ``(train.seed, epoch, batch)``; nothing they do touches the global RNG, so the optimisation
phase draws the same timesteps and noise whether or not the rollout phase ran in this process (resume).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mmalign.diffusion.adapter import DiffusionParts, encode_text
from mmalign.diffusion.sampling import decode_latents


def moved(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor inside it (dicts, lists, dataclasses such as the rollout) on ``device``."""
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, dict):
        return {k: moved(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(moved(v, device) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: moved(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value) if f.init})
    return value


class EpochSlots(Dataset):
    """``length`` slots per epoch (the loop shuffles them with its own ``(seed, epoch)`` permutation)."""

    def __init__(self, engine: OnlineEngine, length: int) -> None:
        self.engine, self.length, self.epoch = engine, length, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, slots: list[int]) -> dict[str, Any]:
        return {"online": self.engine, "epoch": self.epoch, "slots": torch.tensor(slots, dtype=torch.long),
                "groups": len(slots)}


@dataclass
class Rollouts:
    """One epoch's rollouts: a dict of CPU tensors with a leading sample (or pair) axis plus the epoch's prompts,
    and the epoch's logged statistics."""

    epoch: int
    tensors: dict[str, torch.Tensor]
    prompts: list[str]
    stats: dict[str, float] = field(default_factory=dict)


CollectFn = Callable[["OnlineEngine", Any, list[str], int], Rollouts]


class OnlineEngine:
    """Makes, holds and checkpoints the current epoch's rollouts (module docstring)."""

    def __init__(self, *, cfg, parts: DiffusionParts, options, prompts: list[str], reward, accelerator,
                 collect: CollectFn, output_dir: str | os.PathLike) -> None:
        self.cfg, self.parts, self.options, self.prompts = cfg, parts, options, list(prompts)
        self.reward, self.accelerator, self.collect_fn = reward, accelerator, collect
        self.output_dir = Path(output_dir)
        self.rollouts: Rollouts | None = None
        self.history: list[dict[str, Any]] = []
        self.extra_state: dict[str, Any] = {}
        """What a method's step keeps across steps (online DPO's refreshed reference, counters): checkpointed."""
        self._embeds: dict[str, dict[str, torch.Tensor]] = {}

    # --- the epoch's prompts, conditioning and images ---------------------------------------------------------
    def epoch_prompts(self, epoch: int) -> list[str]:
        """``prompts_per_epoch`` train prompts: a ``(seed, epoch)`` permutation, repeated when it is too short."""
        g = torch.Generator().manual_seed(self.cfg.train.seed * 1_000_003 + epoch)
        n, out = self.options.prompts_per_epoch, []
        while len(out) < n:
            out += [self.prompts[i] for i in torch.randperm(len(self.prompts), generator=g).tolist()]
        return out[:n]

    def process_share(self, prompts: list[str]) -> list[str]:
        """This process's prompts (contiguous blocks, rank order): every process samples and trains on its share
        (:meth:`gather` for the statistics)."""
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if len(prompts) % world:
            raise ValueError(f"prompts_per_epoch ({len(prompts)}) must be a multiple of the {world} processes")
        share = len(prompts) // world
        return prompts[rank * share:(rank + 1) * share]

    def generator(self, epoch: int, index: int) -> torch.Generator:
        """The noise of rollout batch ``index`` of ``epoch`` on this process (CPU generator: device-independent)."""
        seed = (self.cfg.train.seed * 1_000_003 + epoch) * 4099 + index * 131 + self.accelerator.process_index
        return torch.Generator().manual_seed(seed)

    def condition(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Text conditioning of ``prompts`` (each distinct prompt encoded once, kept on the CPU in float32)."""
        missing = sorted({p for p in prompts if p not in self._embeds})
        if missing:
            with torch.no_grad():
                encoded = encode_text(self.parts, missing, self.accelerator.device)
            for i, p in enumerate(missing):
                self._embeds[p] = {k: v[i].float().cpu() for k, v in encoded.items()}
            if len(self._embeds) > 4096:  # a bounded cache: prompt sets are re-encoded rather than kept whole
                self._embeds = {p: self._embeds[p] for p in prompts}
        return {k: torch.stack([self._embeds[p][k] for p in prompts]) for k in self._embeds[prompts[0]]}

    def negative_condition(self, n: int) -> dict[str, torch.Tensor]:
        """The empty prompt's conditioning (CFG's unconditional branch), ``n`` times."""
        return {k: v.expand(n, *v.shape[1:]) for k, v in self.condition([""]).items()}

    def _reward_batch(self) -> int:
        size, group = self.cfg.reward.batch_size, self.options.group_size
        return max(group, size - size % group)  # whole groups per call (the reward normalises within groups)

    @torch.no_grad()
    def score(self, latents: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Decode final latents and score them with the reward in batches (``reward.batch_size``): ``(total [N],
        {term: raw scores [N]})``; groups of ``group_size`` consecutive images share a prompt."""
        size = self._reward_batch()
        images = [((decode_latents(self.parts.pipeline, latents[s:s + size].to(self.accelerator.device)) + 1) / 2
                   ).clamp(0, 1) for s in range(0, len(prompts), size)]
        return self.score_images(torch.cat(images), prompts)

    @torch.no_grad()
    def score_images(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reward of images in [0, 1] (N, 3, H, W), in batches of whole prompt groups."""
        size, group = self._reward_batch(), self.options.group_size
        totals, terms = [], {}
        for start in range(0, len(prompts), size):
            out = self.reward(images[start:start + size], prompts[start:start + size], group_size=group)
            totals.append(out.total.float().cpu())
            for name, value in out.terms.items():
                terms.setdefault(name, []).append(value.float().cpu())
        return torch.cat(totals), {k: torch.cat(v) for k, v in terms.items()}

    def gather(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every process's rewards, concatenated in rank order (a no-op on one process): the epoch's statistics
        and ``global_std``. The rollouts themselves stay on their process, which trains on its own (slot ``s`` is
        its local item ``s mod n``)."""
        if self.accelerator.num_processes == 1:
            return tensors
        device = self.accelerator.device
        return {k: self.accelerator.gather(v.to(device).contiguous()).cpu() for k, v in tensors.items()}

    # --- the loop's entry ------------------------------------------------------------------------------------
    def ensure(self, epoch: int, policy) -> Rollouts:
        """The rollouts of ``epoch``, made now (from ``policy``, in eval mode without gradients) when missing."""
        if self.rollouts is not None and self.rollouts.epoch == epoch:
            return self.rollouts
        from mmalign.unwrap import unwrap

        model = unwrap(policy)
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                self.log_eval_grid(epoch)
                rollouts = self.collect_fn(self, model, self.epoch_prompts(epoch), epoch)
        finally:
            model.train(was_training)
        rollouts.stats["rollout_seconds"] = time.perf_counter() - t0
        self.rollouts = rollouts
        self._record(rollouts)
        return rollouts

    def log_eval_grid(self, epoch: int) -> None:
        """The fixed evaluation prompts (``validation.prompts``, ``eval_steps`` steps, ``validation.seed``) as one
        grid image in TensorBoard (``online/eval_grid`` at the epoch's first step), every ``eval_every`` epochs on
        the main process; seeded generators only (the global RNG is untouched)."""
        prompts, every = self.cfg.validation.prompts, self.options.eval_every
        if not prompts or not every or epoch % every or not self.accelerator.is_main_process:
            return
        tracker = next((t for t in self.accelerator.trackers if t.name == "tensorboard"), None)
        if tracker is None:
            return
        import numpy as np

        from mmalign.diffusion.sampling import generate
        from mmalign.diffusion.validation import image_grid

        pipe = self.parts.pipeline
        pipe.set_progress_bar_config(disable=True)
        generators = [torch.Generator().manual_seed(self.cfg.validation.seed) for _ in prompts]
        kwargs = sampler_kwargs(self, self.options.eval_steps)
        if "eta" in kwargs:
            kwargs["eta"] = 0.0  # evaluation samples with the deterministic sampler (flow_grpo: the ODE)
        images = generate(pipe, list(prompts), generator=generators, autocast=self.autocast, **kwargs)
        grid = np.asarray(image_grid(images, rows=1))
        step = epoch * self.steps_per_epoch
        tracker.writer.add_image("online/eval_grid", grid, global_step=step, dataformats="HWC")

    @property
    def steps_per_epoch(self) -> int:
        cfg = self.cfg
        return slots_per_epoch(cfg) // (cfg.train.batch_size * self.accelerator.num_processes * cfg.train.grad_accum)

    def progress(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, leave=False,
                    disable=not (self.cfg.train.progress_bar and self.accelerator.is_local_main_process))

    def autocast(self):
        return self.accelerator.autocast() if self.accelerator is not None else nullcontext()

    def _record(self, rollouts: Rollouts) -> None:
        record = {"epoch": rollouts.epoch, **{k: round(float(v), 6) for k, v in rollouts.stats.items()}}
        self.history.append(record)
        if self.accelerator.is_main_process:
            from mmalign.training.metrics import write_summary

            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_summary(self.output_dir, {"online_epochs": self.history})
            self.accelerator.print("epoch {epoch}: ".format(**record) + ", ".join(
                f"{k} {v:.4g}" for k, v in record.items() if k.startswith("reward/") and k.endswith("mean")))

    def epoch_metrics(self) -> dict[str, float]:
        """The current epoch's statistics, added to every step's metrics (the loop logs them per step)."""
        if self.rollouts is None:
            return {}
        return {k: v for k, v in self.rollouts.stats.items() if k != "rollout_seconds"}

    # --- checkpointing (accelerator.register_for_checkpointing) ------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        r = self.rollouts
        return {"rollouts": None if r is None else {"epoch": r.epoch, "tensors": r.tensors, "prompts": r.prompts,
                                                    "stats": r.stats},
                "history": self.history, "extra": self.extra_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore (accelerate loads custom states onto the CPU: GRPO's rollouts go back to the training device)."""
        r = state.get("rollouts")
        device = self.accelerator.device
        self.rollouts = None if r is None else Rollouts(r["epoch"], moved(r["tensors"], device), r["prompts"],
                                                        r["stats"])
        self.history = list(state.get("history", []))
        self.extra_state = dict(state.get("extra", {}))


def slots_per_epoch(cfg) -> int:
    """Micro-batch items per loop epoch (each method's options say: ``GrpoOptions.slots_per_epoch``,
    ``OnlineDpoOptions.slots_per_epoch``)."""
    return getattr(cfg.method, cfg.method.name).slots_per_epoch()


def sampler_kwargs(engine: OnlineEngine, steps: int) -> dict[str, Any]:
    """The pipeline call's settings: size, steps, guidance, DDIM eta where the pipeline takes it."""
    import inspect

    o, size = engine.options, engine.cfg.data.resolution
    kwargs: dict[str, Any] = dict(height=size, width=size, num_inference_steps=steps, guidance_scale=o.guidance_scale)
    if "eta" in inspect.signature(type(engine.parts.pipeline).__call__).parameters and not engine.parts.is_flow:
        kwargs["eta"] = o.eta if o.sde in ("auto", "ddim") else 0.0
    return kwargs
