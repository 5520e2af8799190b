"""The family-neutral key policy pieces every family's schema calls (:mod:`mmalign.method_registry`): old flat keys
renamed to the section of the run's method (written once: diffusion, VLM and video pass their own table), and the
saved view of a run of one or several methods."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mmalign.config_error import ConfigError
from mmalign.method_registry import MethodSpecBase, chosen_view, renamed_option_key


@dataclass
class _Noise:
    eta: float = 0.0


@dataclass
class _AOptions:
    weight: float = 1.0
    noise: _Noise = field(default_factory=_Noise)


@dataclass
class _BOptions:
    weight: float = 2.0


@dataclass(frozen=True)
class _Spec(MethodSpecBase):
    name: str
    options: type | None = None
    uses: tuple[str, ...] = ("beta",)
    ignores: tuple[str, ...] = ()


REGISTRY = {s.name: s for s in (_Spec("a", _AOptions), _Spec("b", _BOptions, ignores=("lora",)),
                                _Spec("plain", None, uses=(), ignores=("lora",)))}
LEGACY = {"method.old_weight": "weight", "method.noise.": "noise"}


def test_an_old_key_moves_to_the_first_run_method_that_has_the_option():
    assert renamed_option_key(REGISTRY, LEGACY, "method.old_weight", ["a"]) == "method.a.weight"
    assert renamed_option_key(REGISTRY, LEGACY, "method.old_weight", ["plain", "b", "a"]) == "method.b.weight"
    assert renamed_option_key(REGISTRY, LEGACY, "method.noise.eta", ["plain", "a"]) == "method.a.noise.eta"


def test_other_keys_and_unknown_methods_are_left_alone():
    assert renamed_option_key(REGISTRY, LEGACY, "method.beta", ["a"]) is None
    assert renamed_option_key(REGISTRY, LEGACY, "method.old_weight", ["nope"]) is None  # the name check reports it


def test_an_old_key_no_run_method_reads_names_key_methods_and_readers():
    with pytest.raises(ConfigError, match=r"'method.noise.eta' does not apply to method 'plain' nor to b "
                                          r"\(it is an option of a: method.a.noise\)"):
        renamed_option_key(REGISTRY, LEGACY, "method.noise.eta", ["plain", "b"])


def test_the_saved_view_keeps_what_any_run_method_reads():
    config = {"lora": {"rank": 4}, "method": {"name": "a", "beta": 0.1, "a": {"weight": 1.0}, "b": {"weight": 2.0}}}
    assert chosen_view(REGISTRY, config, ("beta",)) == {
        "lora": {"rank": 4}, "method": {"name": "a", "beta": 0.1, "a": {"weight": 1.0}}}
    both = chosen_view(REGISTRY, config, ("beta",), ["a", "b"])
    assert both["method"] == config["method"] and "lora" in both  # a reads lora: kept
    plain = chosen_view(REGISTRY, config, ("beta",), ["plain", "b"])
    assert plain == {"method": {"name": "a", "beta": 0.1, "b": {"weight": 2.0}}}  # neither reads lora
