"""The ``training_set`` hook of the online methods: the reward, the engine and the epoch's slots."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from mmalign.config_error import ConfigError
from mmalign.diffusion.adapter import DiffusionParts, apply_model_options
from mmalign.diffusion.online.engine import EpochSlots, OnlineEngine, slots_per_epoch
from mmalign.diffusion.registry import method_spec


def check_reward_checkpoints(reward_cfg) -> None:
    """Before any model loads: every reward term has a checkpoint (``reward.checkpoints.<name>``, or its card's
    default) and each local one (and a ``backbone_checkpoint`` given in ``reward.scorer_args``) exists; a
    ConfigError names the key. Hub references (``org/repo`` or ``org/repo/file``) pass: fetched at load when online
    (:func:`scorers.checkpoints.resolve_checkpoint`), as ``model.pretrained``'s hub ids do."""
    from scorers.cards import load_card
    from scorers.checkpoints import card_default, is_hub_reference

    for name in reward_cfg.scorers:
        args = dict(reward_cfg.scorer_args.get(name, {}))
        card = load_card(name)
        key, ref = f"reward.checkpoints.{name}", reward_cfg.checkpoints.get(name)
        if not ref and args.get("checkpoint"):
            key, ref = f"reward.scorer_args.{name}.checkpoint", args["checkpoint"]
        ref = ref or card_default(card.default_checkpoint)
        if not ref:
            raise ConfigError(f"config key '{key}' is required: the '{name}' scorer card has no default checkpoint "
                              "(set a local file or folder)")
        checks = [(key, str(ref))]
        if args.get("backbone_checkpoint"):
            checks.append((f"reward.scorer_args.{name}.backbone_checkpoint", str(args["backbone_checkpoint"])))
        for what, path in checks:
            if not (Path(path).expanduser().exists() or is_hub_reference(path)):
                raise ConfigError(f"config key '{what}' points to a path that does not exist: {path}")


def load_reward_model(reward_cfg, device) -> Any:
    """The ``reward:`` block as a :class:`scorers.reward.Reward` on its own device (``auto``: the training
    device) and dtype."""
    from scorers.reward import load_reward, parse_reward_spec

    target = str(device) if reward_cfg.device == "auto" else reward_cfg.device
    return load_reward(parse_reward_spec(dict(reward_cfg.scorers)), checkpoints=dict(reward_cfg.checkpoints),
                       scorer_args={k: dict(v) for k, v in reward_cfg.scorer_args.items()},
                       device=target, dtype=reward_cfg.dtype, normalize=reward_cfg.normalize,
                       batch_size=reward_cfg.batch_size)


def online_training_set(cfg, kind: str, dataset, parts: DiffusionParts, accelerator) -> tuple:
    """``(slots, collate, None, stats)`` for the loop (package docstring); the engine is registered for
    checkpointing, so the epoch's rollouts are saved with every checkpoint and restored by ``train.resume``."""
    apply_model_options(parts, cfg.model)
    spec = method_spec(cfg.method.name)
    collect = importlib.import_module(spec.step.split(":")[0]).collect
    reward = load_reward_model(cfg.reward, accelerator.device)
    engine = OnlineEngine(cfg=cfg, parts=parts, options=getattr(cfg.method, cfg.method.name),
                          prompts=dataset.prompts, reward=reward, accelerator=accelerator, collect=collect,
                          output_dir=cfg.output_dir)
    accelerator.register_for_checkpointing(engine)
    slots = EpochSlots(engine, slots_per_epoch(cfg))
    stats = {"online": True, "train_prompts": len(dataset), "slots_per_epoch": len(slots),
             "reward": dict(cfg.reward.scorers)}
    return slots, slots.collate, None, stats
