"""Bad inputs give a clear error or a correct conversion, never a silent wrong score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import scorers
from mmalign.testing.tiny_scorers import TINY_HF_CLIP, TINY_OPEN_CLIP, tiny_open_clip


@pytest.fixture(scope="module")
def hps(hps_checkpoint):
    return scorers.load_scorer("hpsv2", checkpoint=hps_checkpoint[0], arch=TINY_OPEN_CLIP)


def test_grayscale_rgba_palette_and_1x1_are_converted_to_rgb(hps):
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (30, 50), dtype=np.uint8), mode="L")
    rgba = Image.fromarray(rng.integers(0, 256, (41, 29, 4), dtype=np.uint8), mode="RGBA")
    pal = gray.convert("P")
    tiny = Image.fromarray(np.full((1, 1, 3), 200, dtype=np.uint8))
    images = [gray, rgba, pal, tiny]
    expected = hps.score([im.convert("RGB") for im in images], "a cat")
    torch.testing.assert_close(hps.score(images, "a cat"), expected)
    # arrays: HxW gray, HxWx1, HxWx4 and a 1x1 float CHW tensor
    arr = np.array(gray)
    torch.testing.assert_close(hps.score([arr, arr[..., None]], "a cat"), expected[[0, 0]])
    torch.testing.assert_close(hps.score([np.array(rgba)], "a cat"), expected[[1]])
    torch.testing.assert_close(hps.score(torch.full((3, 1, 1), 200 / 255), "a cat"), expected[[3]])
    assert torch.isfinite(hps.score([tiny], "a cat")).all()
    strip = Image.fromarray(rng.integers(0, 256, (1, 300, 3), dtype=np.uint8))  # longest-side resize -> 32x1
    assert torch.isfinite(hps.score([strip], "a cat")).all()
    assert torch.isfinite(hps.score_tensor(torch.rand(1, 3, 1, 300), "a cat")).all()


def test_prompt_errors(hps, images):
    with pytest.raises(ValueError, match="8 images but 3 prompts"):
        hps.score(images, ["a", "b", "c"])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        hps.score(images[:2], ["a cat", "  "])
    with pytest.raises(ValueError, match="needs prompts"):
        hps.score(images)
    with pytest.raises(ValueError, match="ONE prompt"):
        hps.probs(images[:2], ["a", "b"])


def test_image_errors(hps):
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        hps.score(torch.full((1, 3, 8, 8), 2.0), "a cat")  # 0-255 floats: rejected, not clipped
    with pytest.raises(ValueError, match="NaN"):
        hps.score(torch.full((1, 3, 8, 8), float("nan")), "a cat")
    with pytest.raises(ValueError, match="empty image"):
        hps.score([np.zeros((0, 5, 3), dtype=np.uint8)], "a cat")
    with pytest.raises(ValueError, match="shape"):
        hps.score([np.zeros((5, 5, 2), dtype=np.uint8)], "a cat")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        hps.score(["/nonexistent/nope.png"], "a cat")
    with pytest.raises(ValueError, match="dtype"):
        hps.score([np.zeros((5, 5, 3), dtype=np.int64)], "a cat")


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "HPS_v2.1_compressed.pt"
    with pytest.raises(FileNotFoundError, match="HPS_v2.1_compressed.pt"):
        scorers.load_scorer("hpsv2.1", checkpoint=missing, arch=TINY_OPEN_CLIP)
    with pytest.raises(ValueError, match="has no config.json"):
        scorers.load_scorer("pickscore", checkpoint=tmp_path)  # empty folder
    from transformers import CLIPConfig

    CLIPConfig(**TINY_HF_CLIP).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        scorers.load_scorer("pickscore", checkpoint=tmp_path)  # config but no weights
    # a hub id while offline: clear error, not a hang or a random-weight model
    with pytest.raises(FileNotFoundError, match="hub"):
        scorers.load_scorer("pickscore", checkpoint="nobody/no-such-scorer")


def test_wrong_checkpoint_lists_differing_keys(hps_checkpoint, aesthetic_checkpoint, tmp_path):
    # HPS (open_clip) weights into a bigger open_clip arch: shape mismatches listed
    bigger = {**TINY_OPEN_CLIP, "embed_dim": 16}
    with pytest.raises(ValueError, match=r"shape mismatch.*text_projection"):
        scorers.load_scorer("hpsv2", checkpoint=hps_checkpoint[0], arch=bigger)
    # an aesthetic head given to the HPS card: missing and unexpected keys named
    with pytest.raises(ValueError, match=r"(?s)missing key.*'positional_embedding'.*unexpected key.*'layers.0.weight'"):
        scorers.load_scorer("hpsv2", checkpoint=aesthetic_checkpoint[0], arch=TINY_OPEN_CLIP)
    # a truncated state dict
    sd = tiny_open_clip().state_dict()
    sd.pop("visual.proj")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"1 missing key\(s\), first: \['visual.proj'\]"):
        scorers.load_scorer("hpsv2", checkpoint=tmp_path / "bad.pt", arch=TINY_OPEN_CLIP)
    # a pickle that is not weights-only is refused
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        scorers.load_scorer("hpsv2", checkpoint=tmp_path / "garbage.pt", arch=TINY_OPEN_CLIP)


def test_aesthetic_head_dim_mismatch(hf_clip_folder, tmp_path):
    from scorers.heads import AestheticMLP

    torch.save(AestheticMLP(768).state_dict(), tmp_path / "l14.pth")
    with pytest.raises(ValueError, match="768-d embeddings but the CLIP backbone gives 32-d"):
        scorers.load_scorer("aesthetic", checkpoint=tmp_path / "l14.pth", backbone_checkpoint=str(hf_clip_folder[0]))


def test_card_errors():
    with pytest.raises(ValueError, match="unknown scorer 'hps3'"):
        scorers.load_scorer("hps3")
    with pytest.raises(ValueError, match="unknown card key"):
        scorers.load_card("hpsv2", archh="ViT-B-32")
    with pytest.raises(ValueError, match="resize='middle'"):
        scorers.load_card("hpsv2", resize="middle")
    with pytest.raises(ValueError, match="unknown open_clip arch"):
        from scorers.backbones import _open_clip_model_cfg

        _open_clip_model_cfg(scorers.load_card("hpsv2", arch="ViT-Nope"), None)


def test_all_shipped_cards_load_and_document_a_scale():
    names = scorers.available_scorers()
    assert {"hpsv2", "hpsv2.1", "pickscore", "clipscore", "aesthetic"} <= set(names)
    for name in names:
        card = scorers.load_card(name)
        assert card.name == name and card.scale and card.description
    assert scorers.load_card("hpsv2").scale_value == 100.0
    assert scorers.load_card("pickscore").scale_kind == "logit_scale"
    assert scorers.load_card("clipscore").clamp_min == 0.0 and scorers.load_card("clipscore").scale_value == 2.5
