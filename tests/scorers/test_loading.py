"""Other checkpoint layouts: open_clip local-dir folders with a card given as a YAML path."""

from __future__ import annotations

import json

import torch
import yaml
from safetensors.torch import save_file

import scorers
from mmalign.testing.tiny_scorers import TINY_OPEN_CLIP, tiny_open_clip
from scorers.cards import CARD_DIR


def test_open_clip_local_dir_folder_and_custom_card(tmp_path, images):
    """A card YAML given by path (format of scorers/cards), arch from the folder's open_clip_config.json."""
    model = tiny_open_clip(seed=4)
    folder = tmp_path / "toy_like"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPEN_CLIP, "preprocess_cfg": {}}))
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    card = yaml.safe_load((CARD_DIR / "hpsv2.yaml").read_text())
    card.update(name="mycard", description="custom", scale="100 * cos")
    card["backbone"]["arch"] = None
    card["preprocess"]["image_size"] = 32
    card["checkpoint"]["default_checkpoint"] = str(folder)
    (tmp_path / "mycard.yaml").write_text(yaml.safe_dump(card))
    s = scorers.load_scorer(str(tmp_path / "mycard.yaml"))
    ref = scorers.load_scorer("hpsv2", checkpoint=folder, arch=TINY_OPEN_CLIP)
    assert s.name == "mycard"
    torch.testing.assert_close(s.score(images, "a cat"), ref.score(images, "a cat"))
    with torch.no_grad():
        px = torch.rand(2, 3, 32, 32)
        expected = torch.nn.functional.normalize(model.encode_image(
            (px - torch.tensor(s.card.mean).view(1, 3, 1, 1)) / torch.tensor(s.card.std).view(1, 3, 1, 1)), dim=-1)
    torch.testing.assert_close(s.image_embeddings(list(px)), expected, atol=2e-2, rtol=0)  # uint8 round trip
