"""Range and choice checks of config values, run by :func:`mmalign.config.load_config` before any model loads.

Each schema module registers the rules of its dataclasses next to their definition::

    register(TrainConfig, lr=Range(0, low_open=True), batch_size=Range(1), optimizer=OneOf("adamw", "adafactor"))

:func:`check_values` walks a loaded config (nested dataclasses, lists of dataclasses such as ``stages``) and raises
:class:`~mmalign.config.ConfigError` naming the dotted key, the value and the allowed range. Every float field is
also required to be finite (``train.lr=nan`` is rejected even without a rule). ``None`` passes every rule (an
optional field left unset); a rule on a list field applies to each element.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmalign.config_error import ConfigError

__all__ = ["Range", "OneOf", "register", "register_check", "check_values", "rules_for"]


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``low_open``/``high_open``: strict), optionally an integer ``multiple`` of a step."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    multiple: int | None = None

    def allows(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return self.multiple is None or value % self.multiple == 0

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_num(self.low)}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {_num(self.high)}")
        text = " and ".join(parts) or "a finite number"
        if self.multiple is not None:
            text += f", a multiple of {self.multiple}"
        return text


@dataclass(frozen=True)
class OneOf:
    """One of the listed values (strings compared as written)."""

    choices: tuple[Any, ...]

    def __init__(self, *choices: Any) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def allows(self, value: Any) -> bool:
        return value in self.choices

    def describe(self) -> str:
        return "one of " + ", ".join(str(c) for c in self.choices)


Rule = Range | OneOf
Check = Callable[[Any], "str | None"]
_RULES: dict[type, dict[str, Rule]] = {}
_CHECKS: dict[type, list[Check]] = {}


def register(cls: type, **rules: Rule) -> None:
    """Attach ``field name -> rule`` checks to the dataclass ``cls`` (unknown field names are a bug: raise)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(rules) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {unknown}")
    _RULES.setdefault(cls, {}).update(rules)


def register_check(cls: type, check: Check) -> None:
    """A check across fields of ``cls``: ``check(instance)`` returns an error message (keys relative to the
    section, e.g. ``"min_frames (4) must be <= max_frames (2)"``) or ``None``."""
    _CHECKS.setdefault(cls, []).append(check)


def rules_for(cls: type) -> dict[str, Rule]:
    """The rules of ``cls`` and of the blocks it extends (a subclass's rule for a key wins)."""
    rules: dict[str, Rule] = {}
    for base in reversed(cls.__mro__):
        rules.update(_RULES.get(base, {}))
    return rules


def check_values(cfg: Any, prefix: str = "") -> None:
    """Raise :class:`ConfigError` for the first value outside its registered range (walks nested dataclasses)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        return
    rules = rules_for(type(cfg))
    for f in dataclasses.fields(cfg):
        key, value = f"{prefix}{f.name}", getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_values(value, f"{key}.")
            continue
        items = list(enumerate(value)) if isinstance(value, list | tuple) else [(None, value)]
        for index, item in items:
            item_key = key if index is None else f"{key}.{index}"
            if dataclasses.is_dataclass(item):
                check_values(item, f"{item_key}.")
                continue
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"config key '{item_key}': {item!r} is not a finite number")
            rule = rules.get(f.name)
            if rule is not None and item is not None and not rule.allows(item):
                verdict = "is not allowed" if isinstance(rule, OneOf) else "is out of range"
                raise ConfigError(f"config key '{item_key}': {item!r} {verdict}; allowed: {rule.describe()}")
    for check in _CHECKS.get(type(cfg), []):
        problem = check(cfg)
        if problem:
            where = f"config section '{prefix.rstrip('.')}'" if prefix else "config"
            raise ConfigError(f"{where}: {problem}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def output_dir_problem(path: str, key: str = "output_dir") -> str | None:
    """Why ``path`` cannot be a run folder (it or a parent is a file, or it cannot be created), or ``None``."""
    import os
    from pathlib import Path

    target = Path(os.path.expanduser(path))
    if target.exists() and not target.is_dir():
        return f"{key}={path!r} is a file, not a folder; choose another output_dir"
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"{key}={path!r}: {probe} is a file, so the folder cannot be created"
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        return f"{key}={path!r}: {probe} is not writable"
    return None


def check_batch_fits(n_examples: int, batch_size: int, num_processes: int = 1, what: str = "examples") -> None:
    """ConfigError when one global batch needs more examples than the data set has (the loop would make none)."""
    if n_examples < batch_size * num_processes:
        procs = f" x {num_processes} processes" if num_processes > 1 else ""
        raise ConfigError(
            f"config key 'train.batch_size': {batch_size}{procs} is larger than the data set ({n_examples} {what}); "
            "lower train.batch_size or use more data"
        )
