"""The LAION aesthetic predictor v2 head (christophschuhmann/improved-aesthetic-predictor @ 6934dd8,
``simple_inference.py``; spec §6): an MLP with no activations on the L2-normalised CLIP image embedding.

``layers``: Linear(d,1024) → Dropout(0.2) → Linear(1024,128) → Dropout(0.2) → Linear(128,64) → Dropout(0.1) →
Linear(64,16) → Linear(16,1); state-dict keys ``layers.{0,2,4,6,7}.{weight,bias}`` as in
``sac+logos+ava1-l14-linearMSE.pth`` (whose tensors are saved on ``cuda:0``: we read with ``map_location="cpu"``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from scorers.checkpoints import load_strict, read_state_dict


class AestheticMLP(nn.Module):
    def __init__(self, input_size: int = 768):
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_aesthetic_mlp(path: Path, embed_dim: int) -> AestheticMLP:
    """Strictly load the head; its input size must equal the backbone's embedding size."""
    sd = read_state_dict(path)
    first = sd.get("layers.0.weight")
    if first is not None and first.shape[1] != embed_dim:
        raise ValueError(f"aesthetic head {path} takes {first.shape[1]}-d embeddings but the CLIP backbone gives "
                         f"{embed_dim}-d (the official head needs CLIP ViT-L/14, 768-d)")
    head = AestheticMLP(embed_dim)
    load_strict(head, sd, path)
    return head.eval()
