"""Typed recipe configs: dataclasses loaded from YAML with dotted ``key=value`` overrides.

OmegaConf structured configs do the merging and type checking; this module only turns their errors
into messages that name the offending key and list the valid names, and checks required paths before
any model is loaded.

Usage::

    cfg = load_config(DiffusionRecipeConfig, "recipes/configs/diffusion/toy_dpo.yaml",
                      ["train.max_steps=10", "--method.beta", "2500"])
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from mmalign.config_error import ConfigError

T = TypeVar("T")

__all__ = ["MISSING", "ConfigError", "load_config", "parse_overrides", "to_dict", "require_paths", "is_remote_id"]

RenameFn = Callable[[str, dict], "str | None"]
"""A schema's ``renamed_key(old_dotted_key, raw_config) -> new dotted key | None`` (old keys accepted for one
release: :func:`load_config` rewrites them and prints a deprecation note naming the new key). ``raw_config`` is the
YAML mapping with the overrides applied, so a rename may depend on other values (e.g. ``method.name``)."""
MigrateFn = Callable[[dict], "list[tuple[str, str]]"]
"""A schema's ``migrate(raw) -> [(old, new), ...]``: old *values* rewritten in place (``lora.enabled: false`` →
``lora.rank: 0``), run after the renames on the YAML mapping and on each command-line override; every pair is printed
as a deprecation note."""


def parse_overrides(args: Sequence[str]) -> list[str]:
    """Normalise ``key=value``, ``--key=value`` and ``--key value`` into ``key=value`` strings."""
    out: list[str] = []
    i = 0
    args = list(args)
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            arg = arg[2:]
            if "=" not in arg:
                if i + 1 >= len(args):
                    raise ConfigError(f"override '--{arg}' has no value")
                arg = f"{arg}={args[i + 1]}"
                i += 1
        if "=" not in arg:
            raise ConfigError(f"override '{arg}' is not of the form key=value")
        out.append(arg)
        i += 1
    return out


def _check_keys(schema_cls: type, data: Any, prefix: str = "") -> None:
    """Reject unknown keys with the list of valid names (OmegaConf's own message omits them)."""
    if not isinstance(data, dict) or not dataclasses.is_dataclass(schema_cls):
        return
    import typing

    hints = typing.get_type_hints(schema_cls)
    names = {f.name for f in dataclasses.fields(schema_cls)}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{dotted}'; valid keys here: {', '.join(sorted(names))}")
        sub = hints.get(key)
        if dataclasses.is_dataclass(sub):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(
                    f"config key '{dotted}' is a section and needs a mapping of its fields "
                    f"({', '.join(f.name for f in dataclasses.fields(sub))}), got {value!r}"
                )
            _check_keys(sub, value, f"{dotted}.")


def load_config(schema_cls: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Load ``path`` (YAML, safe loader) onto the dataclass ``schema_cls`` and apply overrides.

    Unknown keys, wrong types and missing mandatory values raise :class:`ConfigError` naming the key.
    Returns a real ``schema_cls`` instance (not an OmegaConf container).
    """
    schema = OmegaConf.structured(schema_cls)
    merged = schema
    given: set[str] = set()  # the dotted keys the user set (YAML and overrides), for the schema's check_given
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.load(fh, Loader=_UniqueKeySafeLoader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(_yaml_error(path, exc)) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
        _refuse_nul(data, str(path))
        data = _rename_yaml_keys(schema_cls, data, overrides, str(path))
        _migrate(schema_cls, data, str(path))
        try:
            _check_keys(schema_cls, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        merged = _merge(merged, OmegaConf.create(data), source=str(path))
        given.update(_flatten(data))
    for item in overrides:
        _refuse_nul(item, "command line")
    context = _with_overrides(OmegaConf.to_container(merged), overrides)  # what renames may depend on
    config_lora = OmegaConf.to_container(merged).get("lora")  # before the command line: rank_override_note
    cli_keys: set[str] = set()
    for raw_item in parse_overrides(overrides):
        for item in _migrate_override(schema_cls, _rename_override(schema_cls, raw_item, context)):
            key = item.split("=", 1)[0]
            given.add(key)
            cli_keys.add(key)
            _check_key_path(schema_cls, key, merged)
            try:  # OmegaConf.update per item: list entries (stages.0.data=...) are assigned in place
                merged.merge_with_dotlist([item])
            except OmegaConfBaseException as exc:
                raise ConfigError(_describe(exc, "command line")) from None
    try:
        obj = OmegaConf.to_object(merged)
    except MissingMandatoryValue as exc:
        raise ConfigError(f"missing required config value '{exc.full_key}'") from None
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe(exc, "config")) from None
    except ValueError as exc:  # a dataclass __post_init__ check; its message names the key
        raise ConfigError(str(exc)) from None
    from mmalign.validate import check_values

    check_values(obj)  # ranges and choices registered by the schema modules (mmalign.validate)
    if (check_given := getattr(schema_cls, "check_given", None)) is not None:
        check_given(obj, given)  # e.g. options of another method than method.name
    _note_lora_scale(config_lora, obj, cli_keys)
    return obj  # type: ignore[return-value]


def _note_lora_scale(config_lora: Any, obj: Any, cli_keys: set[str]) -> None:
    """Print :func:`mmalign.lora_config.rank_override_note` when a command-line rank changes the LoRA scale."""
    from mmalign.lora_config import LoraConfig, rank_override_note

    lora = getattr(obj, "lora", None)
    if not isinstance(lora, LoraConfig) or not isinstance(config_lora, dict) or "lora.rank" not in cli_keys:
        return
    note = rank_override_note(config_lora.get("rank"), config_lora.get("alpha"), lora, "lora.alpha" in cli_keys)
    if note:
        import sys

        print(note, file=sys.stderr)


def _refuse_nul(value: Any, source: str, key: str = "") -> None:
    """A NUL character fits no path or name (``open`` raises "embedded null byte" deep in a run): refuse it here."""
    if isinstance(value, dict):
        for k, v in value.items():
            _refuse_nul(k, source, key)
            _refuse_nul(v, source, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_nul(v, source, f"{key}.{i}")
    elif isinstance(value, str) and "\x00" in value:
        where = f"config key '{key}'" if key else f"'{value.split('=', 1)[0]}'"
        raise ConfigError(f"{source}: {where} contains a NUL character, which no path or name can hold: {value!r}")


def _renamer(schema_cls: type) -> RenameFn | None:
    return getattr(schema_cls, "renamed_key", None)


def _migrate(schema_cls: type, data: dict, source: str) -> bool:
    """Apply the schema's ``migrate`` hook to ``data`` in place (a note per old value); True when it changed."""
    migrate: MigrateFn | None = getattr(schema_cls, "migrate", None)
    if migrate is None:
        return False
    notes = migrate(data)
    for old, new in notes:
        _deprecated(old, new, source)
    return bool(notes)


def _migrate_override(schema_cls: type, item: str) -> list[str]:
    """One override as the overrides it stands for after ``migrate`` (none, when the old value is now implied)."""
    key, value = item.split("=", 1)
    data: dict = {}
    try:
        parsed = yaml.load(value, Loader=_BoundedSafeLoader) if value else value
    except yaml.YAMLError:
        parsed = value
    _put(data, key, parsed, overwrite=True)
    if not _migrate(schema_cls, data, "command line"):
        return [item]
    return [f"{k}={_override_value(_get(data, k))}" for k in _flatten(data)]


def _get(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def _override_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _deprecated(old: str, new: str, source: str) -> None:
    import sys

    print(f"DEPRECATED: {source}: config key '{old}' is now '{new}' (the old key is read for one release)",
          file=sys.stderr)


def _flatten(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.extend(_flatten(value, f"{dotted}.") if isinstance(value, dict) and value else [dotted])
    return keys


def _rename_yaml_keys(schema_cls: type, data: dict, overrides: Sequence[str], source: str) -> dict:
    """``data`` with each deprecated key moved to its new place (a note per key); the overrides count for renames
    that depend on another value (``method.name=kto`` on the command line)."""
    rename = _renamer(schema_cls)
    if rename is None:
        return data
    import copy

    raw = _with_overrides(data, overrides)
    out = copy.deepcopy(data)
    for old in _flatten(data):
        new = rename(old, raw)
        if new is None or new == old:
            continue
        _deprecated(old, new, source)
        value = _pop(out, old)
        if not _put(out, new, value, overwrite=False):
            raise ConfigError(f"{source}: config keys '{old}' (deprecated) and '{new}' are both set; keep '{new}'")
    return out


def _with_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """A copy of ``data`` with the raw override values put in (strings; only for renames to look at)."""
    import copy

    out = copy.deepcopy(data)
    for item in parse_overrides(overrides):
        key, value = item.split("=", 1)
        _put(out, key, value, overwrite=True)
    return out


def _pop(data: dict, dotted: str) -> Any:
    """Remove ``dotted`` from nested dicts (and parents left empty); returns its value."""
    *parents, last = dotted.split(".")
    chain = [data]
    for part in parents:
        chain.append(chain[-1][part])
    value = chain[-1].pop(last)
    for node, part in zip(reversed(chain[:-1]), reversed(parents)):
        if not node[part]:
            del node[part]
    return value


def _put(data: dict, dotted: str, value: Any, overwrite: bool) -> bool:
    """Set ``dotted`` in nested dicts; False when it is already set and ``overwrite`` is off."""
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if last in node and not overwrite:
        return False
    node[last] = value
    return True


def _rename_override(schema_cls: type, item: str, context: dict) -> str:
    rename = _renamer(schema_cls)
    if rename is None:
        return item
    key, value = item.split("=", 1)
    new = rename(key, context)
    if new is None or new == key:
        return item
    _deprecated(key, new, "command line")
    return f"{new}={value}"


MAX_YAML_NODES = 100_000
"""The most nodes a config may hold with every alias expanded. A config is a few hundred; nested aliases (an
"alias bomb": 1.7 KB expanding to billions of nodes) would otherwise exhaust memory in the deep copies of OmegaConf."""


class _BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a document whose aliases expand past :data:`MAX_YAML_NODES` nodes, or that
    refers to itself, before any Python object is built (composing keeps an alias as one shared node: linear)."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node, self.name)
        return super().construct_document(node)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Size of ``root`` with aliases expanded (memoised per shared node, so linear in the file), capped."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > MAX_YAML_NODES:
                line = node.start_mark.line + 1
                raise ConfigError(
                    f"{source}: line {line}: the YAML expands to more than {MAX_YAML_NODES} values through nested "
                    "aliases (&anchor / *alias); refused (a config holds a few hundred: an alias bomb?)")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigError(f"{source}: line {node.start_mark.line + 1}: a YAML alias refers to a value that "
                              "contains it (a recursive structure); refused")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


class _UniqueKeySafeLoader(_BoundedSafeLoader):
    """``yaml.SafeLoader`` that rejects a key repeated in one mapping (plain safe_load keeps the last) and alias
    bombs (:class:`_BoundedSafeLoader`)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"{self.name}: line {key_node.start_mark.line + 1}: config key '{key}' is repeated")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """One line: ``<file>: line L, column C: <problem>`` (python/* and other unknown tags named as such)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "could not determine a constructor for the tag" in str(problem):
        tag = str(problem).split("for the tag", 1)[1].strip(" '").replace("tag:yaml.org,2002:", "!!")
        problem = f"YAML tag '{tag}' is not allowed (configs are plain data: no Python objects)"
    context = getattr(exc, "context", None)
    return f"{path}: {where}not valid YAML: {problem}" + (f" ({context})" if context else "")


def _check_key_path(schema_cls: type, dotted: str, current: Any = None) -> None:
    """An override's key must name a field; a list entry is addressed by an index that exists in ``current``
    (the config merged so far), e.g. ``stages.0.data``."""
    import typing

    node: Any = schema_cls
    walked: list[str] = []
    for part in dotted.split("."):
        node = _strip_optional(node)
        parent, walked = ".".join(walked), [*walked, part]
        if typing.get_origin(node) is list:
            size = len(current) if current is not None else 0
            if not part.isdigit() or int(part) >= size:
                valid = f"indices 0..{size - 1}" if size else "it is empty; set the whole list instead"
                raise ConfigError(f"config key '{'.'.join(walked)}': '{parent}' is a list of {size} entries "
                                  f"({valid}), so '{part}' is not an entry of it")
            node, current = typing.get_args(node)[0], current[int(part)]
            continue
        if not dataclasses.is_dataclass(node):
            return
        names = {f.name for f in dataclasses.fields(node)}
        if part not in names:
            raise ConfigError(
                f"unknown config key '{'.'.join(walked)}'; valid keys here: {', '.join(sorted(names))}"
            )
        node = typing.get_type_hints(node).get(part)
        current = _child(current, part)
    if dataclasses.is_dataclass(_strip_optional(node)):
        fields = dataclasses.fields(_strip_optional(node))
        raise ConfigError(
            f"config key '{dotted}' is a section; override its fields instead, e.g. {dotted}.{fields[0].name}=..."
        )


def _child(node: Any, key: str) -> Any:
    """``node.key`` of a config container, or None (no container, or a value still MISSING)."""
    try:
        return getattr(node, key) if node is not None else None
    except OmegaConfBaseException:
        return None


def _strip_optional(tp: Any) -> Any:
    """``X | None`` → ``X``; other types unchanged."""
    import types
    import typing

    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _merge(base: Any, other: Any, source: str) -> Any:
    try:
        return OmegaConf.merge(base, other)
    except (ConfigKeyError, ConfigAttributeError, ValidationError, OmegaConfBaseException) as exc:
        raise ConfigError(_describe(exc, source)) from None


def _describe(exc: OmegaConfBaseException, source: str) -> str:
    key = getattr(exc, "full_key", None) or "?"
    msg = str(exc).splitlines()[0]
    return f"{source}: bad value for config key '{key}': {msg}"


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable dict of a config dataclass."""
    return dataclasses.asdict(cfg)


def is_remote_id(value: str) -> bool:
    """True for something that looks like a hub id (``org/name``) rather than a local path."""
    if not value or os.path.exists(value) or value.startswith((".", "/", "~")):
        return False
    parts = value.split("/")
    return len(parts) == 2 and all(parts)


def require_paths(**named_paths: str | None) -> None:
    """Fail early when a configured local path does not exist. Hub ids (``org/name``) pass through.

    ``require_paths(**{"model.pretrained": cfg.model.pretrained, "data.path": cfg.data.path})``
    """
    for key, value in named_paths.items():
        if value in (None, ""):
            raise ConfigError(f"config key '{key}' is required but empty")
        if is_remote_id(str(value)):
            continue
        if not os.path.exists(os.path.expanduser(str(value))):
            raise ConfigError(f"config key '{key}' points to a path that does not exist: {value}")
