"""The curriculum resets the reference at each stage: at a stage start reference log-probs equal the policy's.

Also: finished stages are replayed from their adapters on restart (resumable per stage)."""

import copy
from types import SimpleNamespace

import torch

from mmalign.lora_config import LoraConfig
from mmalign.mllm.forward import forward_logits
from mmalign.mllm.video.batch import VideoRow, VideoRowCollator, score_logits
from mmalign.mllm.video.curriculum import StageAdapter, fresh_adapter, run_stages
from mmalign.mllm.video.steps import reference_logits


def _scores(model, batch, reference=False):
    with torch.no_grad():
        logits = reference_logits(model, batch) if reference else forward_logits(model, batch)
    return score_logits(logits, batch)[0].sum(-1)


def _train_a_bit(model, batch, steps=3, lr=5e-2):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        logps, _ = score_logits(forward_logits(model, batch), batch)
        (-logps.sum()).backward()
        opt.step()
        opt.zero_grad()


def test_reference_resets_at_each_stage(tiny_qwen2vl, toy_clips, tmp_path):
    base, proc = tiny_qwen2vl
    model = copy.deepcopy(base)
    frames, q, d = toy_clips["train"][1]
    batch = VideoRowCollator(proc)([(VideoRow(frames, q, d),), (VideoRow(frames, q, "up"),)])
    base_scores = _scores(model, batch)
    lora = StageAdapter(LoraConfig(rank=4, alpha=8))
    seen = []

    def run_stage(stage_model, stage, folder):
        policy0, ref0 = _scores(stage_model, batch), _scores(stage_model, batch, reference=True)
        _train_a_bit(stage_model, batch)
        seen.append({"policy_start": policy0, "ref_start": ref0, "policy_end": _scores(stage_model, batch),
                     "ref_end": _scores(stage_model, batch, reference=True)})
        return {"steps": 3}

    stages = [SimpleNamespace(name="r4"), SimpleNamespace(name="r2")]
    final, summaries = run_stages(model, stages, tmp_path, run_stage, lambda s: lora)
    assert [s["stage"] for s in summaries] == ["r4", "r2"]
    for s in seen:  # at each stage start the reference is the policy
        torch.testing.assert_close(s["ref_start"], s["policy_start"], rtol=0, atol=1e-5)
        assert not torch.allclose(s["policy_end"], s["policy_start"])  # training moved the policy ...
        torch.testing.assert_close(s["ref_end"], s["ref_start"])  # ... not the reference
    # stage 2's reference is stage 1's final policy, not the base model
    torch.testing.assert_close(seen[1]["ref_start"], seen[0]["policy_end"], rtol=0, atol=1e-4)
    assert not torch.allclose(seen[1]["ref_start"], base_scores, atol=1e-3)
    final_scores = _scores(final, batch)
    torch.testing.assert_close(final_scores, seen[1]["policy_end"], rtol=0, atol=1e-4)

    # restart: both stages are done -> replayed from their adapters, run_stage is not called again
    def must_not_run(*_):
        raise AssertionError("finished stage re-trained")

    replayed, _ = run_stages(copy.deepcopy(base), stages, tmp_path, must_not_run, lambda s: lora)
    torch.testing.assert_close(_scores(replayed, batch), final_scores, rtol=0, atol=1e-4)


def test_fresh_adapter_freezes_base_and_vision(tiny_qwen2vl):
    base, _ = tiny_qwen2vl
    model = fresh_adapter(copy.deepcopy(base), StageAdapter(LoraConfig(rank=4, alpha=8)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)
    with_vision = fresh_adapter(copy.deepcopy(base), StageAdapter(LoraConfig(rank=4, alpha=8), train_vision=True))
    assert any("visual" in n for n, p in with_vision.named_parameters() if p.requires_grad)


def test_seeded_adapter_init_is_reproducible_and_leaves_global_rng(tiny_qwen2vl):
    model, _ = tiny_qwen2vl
    lora = StageAdapter(LoraConfig(rank=4, alpha=8), seed=3)

    def lora_weights(m):
        return {n: p.detach().clone() for n, p in m.named_parameters() if "lora_A" in n}

    state = torch.random.get_rng_state()
    first = lora_weights(fresh_adapter(copy.deepcopy(model), lora))
    assert torch.equal(torch.random.get_rng_state(), state)  # init drawn from a forked RNG
    torch.rand(7)  # a different global RNG state does not change a seeded init
    second = lora_weights(fresh_adapter(copy.deepcopy(model), lora))
    assert first and first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
