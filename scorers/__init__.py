"""Text-to-image preference scorers behind one API (HPSv2/HPSv2.1, PickScore, CLIPScore, LAION aesthetic, ImageReward,
HPSv3, VLM judges, toy).

>>> import scorers
>>> s = scorers.load_scorer("hpsv2.1", checkpoint="/models/HPS_v2.1_compressed.pt", device="cuda", autocast="bf16")
>>> s.score(images, "a photo of a cat")          # tensor [B], 100 * cos (HPSv2 benchmark scale)
>>> s.probs(images, "a photo of a cat")          # softmax over candidates
>>> s.score_tensor(pixels_in_0_1, prompts)       # differentiable reward

Every scorer is a YAML card in ``scorers/cards`` (backbone, preprocessing, formula, checkpoint layout, scale).
Accuracy protocols: :mod:`scorers.accuracy`; open_clip <-> transformers conversion: :mod:`scorers.convert`.
"""

from scorers.cards import ScorerCard, available_scorers, load_card
from scorers.loading import load_scorer
from scorers.scorer import Scorer

__all__ = ["Scorer", "ScorerCard", "available_scorers", "load_card", "load_scorer"]
