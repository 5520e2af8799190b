"""open_clip <-> transformers CLIP conversion (spec §9.6): equal embeddings to 1e-5 on a tiny model."""

from __future__ import annotations

import open_clip
import torch
from safetensors.torch import save_file

import scorers
from mmalign.testing.tiny_scorers import TINY_OPEN_CLIP, tiny_open_clip
from scorers.convert import (
    hf_clip_config_from_open_clip,
    hf_to_open_clip_state_dict,
    open_clip_to_hf_state_dict,
)

PROMPTS = ["a red circle on the left", "a photo of a cat", "", "an astronaut riding a horse on the moon " * 4]


def test_open_clip_to_hf_embeddings_match():
    from transformers import CLIPModel

    oc = tiny_open_clip(seed=1)
    hf = CLIPModel(hf_clip_config_from_open_clip(TINY_OPEN_CLIP)).eval()
    missing, unexpected = hf.load_state_dict(open_clip_to_hf_state_dict(oc.state_dict()), strict=False)
    assert not unexpected and all(k.endswith("position_ids") for k in missing)
    torch.manual_seed(0)
    px = torch.randn(3, 3, 32, 32)
    ids = open_clip.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(hf.get_image_features(pixel_values=px).pooler_output, oc.encode_image(px),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(hf.get_text_features(input_ids=ids).pooler_output, oc.encode_text(ids),
                                   atol=1e-5, rtol=0)
    assert torch.equal(hf.logit_scale, oc.logit_scale)
    # and back: the round trip is exact
    back = hf_to_open_clip_state_dict(hf.state_dict())
    ref = {k: v for k, v in oc.state_dict().items() if not k.endswith("attn_mask")}
    assert back.keys() == ref.keys()
    assert all(torch.equal(back[k], ref[k]) for k in ref)


def test_hf_checkpoint_runs_on_open_clip_backbone_and_vice_versa(hf_clip_folder, tmp_path):
    """A PickScore-layout folder loads into the open_clip backbone (converted) with equal text embeddings,
    and an open_clip state dict loads into the HF backbone given a CLIPConfig."""
    folder, _ = hf_clip_folder
    pick = scorers.load_scorer("pickscore", checkpoint=folder)
    as_open_clip = scorers.load_scorer("hpsv2", checkpoint=folder / "model.safetensors", arch=TINY_OPEN_CLIP)
    torch.testing.assert_close(as_open_clip.text_embeddings(PROMPTS[:2] + PROMPTS[3:]),
                               pick.text_embeddings(PROMPTS[:2] + PROMPTS[3:]), atol=1e-5, rtol=0)

    oc = tiny_open_clip(seed=2)
    save_file(oc.state_dict(), str(tmp_path / "open_clip.safetensors"))
    cfg = hf_clip_config_from_open_clip(TINY_OPEN_CLIP).to_dict()
    hf_backbone = scorers.load_scorer("pickscore", checkpoint=tmp_path / "open_clip.safetensors", arch=cfg)
    oc_backbone = scorers.load_scorer("pickscore", checkpoint=tmp_path / "open_clip.safetensors",
                                      arch=TINY_OPEN_CLIP, backbone="open_clip")
    px = torch.rand(2, 3, 40, 32)
    torch.testing.assert_close(hf_backbone.score_tensor(px, "a cat"), oc_backbone.score_tensor(px, "a cat"),
                               atol=1e-4, rtol=0)
