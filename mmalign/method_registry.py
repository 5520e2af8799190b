"""The method-spec shape every family shares, and the one key policy over a family's registry.

A family (diffusion: :mod:`mmalign.diffusion.registry`; VLM: :mod:`mmalign.mllm.vlm.methods`; video:
:mod:`mmalign.mllm.video.methods`) keeps a table ``{name: spec}`` of :class:`MethodSpecBase` subclasses. What
every spec says, whatever the family:

* ``options`` — the dataclass of its own options, the YAML section ``method.<name>.*`` (None: no options);
* ``uses`` — which of the family's shared ``method.*`` keys it reads (``beta`` is the preference temperature
  wherever it appears; a method whose weight means something else has it in its own section);
* ``ignores`` — whole top-level blocks its method does not read (PPD trains no LoRA: ``lora``).

The policy (:func:`check_given_keys`, the registry passed in): a key the user set (YAML or override) that the
chosen method does not read is a :class:`~mmalign.config_error.ConfigError` naming the key and the method — a key
of another method's section, a shared key outside ``uses``, any key of an ignored block. A saved run config holds
only what its method reads (:func:`chosen_view`), so it loads again under the same policy.

Old flat spellings of a method's options (``method.mapo_snr``, ``method.anchor_delta``, ``method.alpha``, ...) are
renamed to the section of the run's method that reads them by :func:`renamed_option_key`, the one mechanism every
family's ``renamed_key`` hook calls with its own table of old keys (a deprecation note is printed by
:func:`mmalign.config.load_config`).

This module imports no torch and no family code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

from mmalign.config_error import ConfigError


class MethodSpecBase:
    """What the key policy knows of one method. A family's spec is a dataclass subclass that declares these
    fields in its own order (so its table keeps its entry format) next to its own (data kind, step, hooks)."""

    name: str
    options: type | None
    """Options dataclass read from ``method.<name>.*`` (None: the method has none)."""
    uses: tuple[str, ...]
    """The family's shared ``method.*`` keys the method reads."""
    ignores: tuple[str, ...]
    """Top-level config blocks the method does not read (setting any key of them is an error)."""

    def option_names(self) -> tuple[str, ...]:
        return () if self.options is None else tuple(f.name for f in fields(self.options))


def method_spec_of(registry: Mapping[str, MethodSpecBase], name: str) -> MethodSpecBase:
    """The entry of ``name``; a ConfigError naming ``method.name`` and the registered methods otherwise."""
    if name not in registry:
        raise ConfigError(f"config key 'method.name': unknown method '{name}' ({', '.join(registry)})")
    return registry[name]


def sections(registry: Mapping[str, MethodSpecBase]) -> dict[str, type]:
    """``{name: options dataclass}`` of the methods that have options (the ``method.<name>`` sections)."""
    return {n: s.options for n, s in registry.items() if s.options is not None}


def section_hint(spec: MethodSpecBase) -> str:
    """``method.<name>.<option>, ...`` of one method (``none`` without options)."""
    return ", ".join(f"method.{spec.name}.{o}" for o in spec.option_names()) or "none"


def check_given_keys(registry: Mapping[str, MethodSpecBase], name: str, given: set[str],
                     shared: tuple[str, ...]) -> None:
    """Raise a ConfigError for the first key of ``given`` (dotted keys the user set) that method ``name`` does not
    read (module docstring); ``shared`` = the family's shared ``method.*`` keys."""
    spec = method_spec_of(registry, name)
    own = sections(registry)
    for key in sorted(given):
        parts = key.split(".")
        if parts[0] in spec.ignores:
            raise ConfigError(f"config key '{key}' does not apply to method '{name}': it does not read the "
                              f"'{parts[0]}:' block (remove it)")
        if parts[0] != "method" or len(parts) < 2:
            continue
        option = parts[1]
        if option in own and option != name:
            raise ConfigError(f"config key '{key}' is an option of method '{option}', but method.name is "
                              f"'{name}' (its options: {section_hint(spec)})")
        if option in shared and option not in spec.uses:
            if option in spec.option_names():
                raise ConfigError(f"config key '{key}' does not apply to method '{name}'; set "
                                  f"'method.{name}.{option}' (its own {option}, another quantity)")
            readers = ", ".join(s.name for s in registry.values() if option in s.uses) or "none"
            raise ConfigError(f"config key '{key}' does not apply to method '{name}' (read by: {readers})")


def chosen_view(registry: Mapping[str, MethodSpecBase], config: dict[str, Any], shared: tuple[str, ...],
                names: Sequence[str] | None = None) -> dict:
    """A plain config mapping (``method.name`` set) with only what its method reads: no other method's section, no
    unread shared key, no ignored block — what a saved run config holds, so it loads again. ``names``: the methods
    of the run when there are several (a video curriculum: each stage's); what any of them reads is kept."""
    method = dict(config.get("method") or {})
    specs = [registry[n] for n in (names or [str(method.get("name"))]) if n in registry]
    if not specs:
        return config
    own = sections(registry)
    chosen = {s.name for s in specs}
    read = {k for s in specs for k in s.uses}
    method = {k: v for k, v in method.items()
              if not ((k in own and k not in chosen) or (k in shared and k not in read))}
    ignored = set.intersection(*(set(s.ignores) for s in specs))
    return {k: v for k, v in {**config, "method": method}.items() if k not in ignored}


def renamed_option_key(registry: Mapping[str, MethodSpecBase], legacy: Mapping[str, str], key: str,
                       names: Sequence[str]) -> str | None:
    """The new key of an old flat ``method.*`` key: ``method.<name>.<option>`` of the first of the run's methods
    ``names`` (``method.name``; a curriculum: each stage's method) whose options have it.

    ``legacy`` maps each old key to the option's name in the section (``method.rdpo_noisy`` → ``noisy``);
    an old key ending in ``.`` is a prefix whose sub-keys move with it (``method.noise.`` → ``noise``:
    ``method.noise.eta`` → ``method.smpo.noise.eta``). None for any other key, or when no method of ``names`` is
    registered (the name check reports it); a ConfigError naming the key, the run's methods and the methods that
    have the option when none of ``names`` reads it."""
    prefix = next((old for old in legacy if old.endswith(".") and key.startswith(old)), None)
    if key not in legacy and prefix is None:
        return None
    known = [n for n in dict.fromkeys(names) if n in registry]
    if not known:
        return None
    option = legacy[prefix or key]
    tail = key.removeprefix(prefix) if prefix else ""
    for name in known:
        if option in registry[name].option_names():
            return f"method.{name}.{option}" + (f".{tail}" if tail else "")
    readers = [s.name for s in registry.values() if option in s.option_names()]
    where = f" nor to {', '.join(known[1:])}" if len(known) > 1 else ""
    raise ConfigError(f"config key '{key}' does not apply to method '{known[0]}'{where} (it is an option of "
                      f"{', '.join(readers)}: method.{readers[0]}.{option})")
