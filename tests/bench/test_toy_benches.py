"""Pure pieces of the toy-world benches: method variants of bench/toy_quality.py and the opposed-user data of
bench/ppd_opposed_users.py (the benches themselves take CPU-minutes and are not run by CI)."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from tests.helpers import REPO


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_quality_variants_and_budget():
    tq = load("toy_quality")
    assert tq.parse_variant("dpo") == ("dpo", [])
    assert tq.parse_variant("smpo[method.smpo.order=human; method.beta=5000]") == (
        "smpo", ["method.smpo.order=human", "method.beta=5000"])
    assert tq.run_name("smpo[method.smpo.order=human]") == "smpo-method.smpo.order-human"
    for bad in ("smpo[method.beta=1", "smpo[method.beta]"):
        with pytest.raises(ValueError, match="--methods"):
            tq.parse_variant(bad)
    # the bench's default budget is the main job's config
    import yaml

    cfg = yaml.safe_load((REPO / "recipes/configs/diffusion/toy_dpo.yaml").read_text())
    assert tq.main_job_budget() == {"steps": cfg["train"]["max_steps"], "batch_size": cfg["train"]["batch_size"],
                                    "lr": cfg["train"]["lr"], "rank": cfg["lora"]["rank"],
                                    "num_inference_steps": cfg["eval"]["num_inference_steps"]}


def test_opposed_users_flip_every_decided_label_and_drop_ties():
    po = load("ppd_opposed_users")
    pairs = pd.DataFrame({"caption": ["a", "b", "c"], "label_0": [1.0, 0.5, 0.0], "label_1": [0.0, 0.5, 1.0]})
    out = po.opposed_users(pairs)
    assert out["user_id"].tolist() == [0, 0, 1, 1]
    assert out["caption"].tolist() == ["a", "c", "a", "c"]
    assert out["label_0"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert (out["label_0"] + out["label_1"] == 1.0).all()
