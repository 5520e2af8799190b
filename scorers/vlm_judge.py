"""VLM-as-judge scorer: any local image-text-to-text checkpoint (Qwen2-VL, Qwen2.5-VL, LLaVA ... as loaded by
:func:`mmalign.mllm.model.load_vlm`) answers the card's question; the score is read from the answer tokens'
log-probabilities (teacher forcing, no sampling).

For one image and its prompt the context is the chat template of one user turn ``[image, question.format(prompt)]``
with the generation prompt (plus the template's answer lead, e.g. LLaVA-1.5's space after ``ASSISTANT:``). For
every answer string ``a`` of the card (tokenised without special tokens), ``log p(a) = sum_j log p(a_j | context,
a_<j)`` from the model's logits. Then, with ``p_k = exp(log p(a_k))``:

* no ``answer_values`` (``[Yes, No]``): ``score = p_0 / sum_k p_k`` — the probability of "yes" among the answers
  (``raw=True``: ``p_0`` itself, VQAScore-style);
* ``answer_values`` (``[1 ... 10]`` -> ``1 ... 10``): ``score = sum_k v_k p_k / sum_k p_k`` — the expected rating.

Pairwise mode (:meth:`VLMJudgeScorer.compare`, for labelling): the ``pair_question`` shows two images; with
``q(x, y) = p(first) / (p(first) + p(second))`` for the order (x, y), ``P(A better than B) = (q(A, B) + 1 -
q(B, A)) / 2`` (both orders averaged, so position bias cancels; ``compare(A, B) + compare(B, A) = 1``).

One forward per batch reads every single-token answer at the last context position; each multi-token answer
(e.g. ``10`` for tokenizers that split digits) adds one forward with that answer appended. Contexts are padded on
the left (so they end together) and only the last positions' logits are computed (``logits_to_keep``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from scorers.cards import ScorerCard
from scorers.images import broadcast_prompts, to_pil_list

_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class VLMJudgeScorer:
    """``score(images, prompts) -> Tensor[B]`` from a VLM's answer probabilities; ``compare`` for pairs."""

    needs_text = True

    def __init__(self, card: ScorerCard, model: torch.nn.Module, processor: Any, *, device: str | torch.device):
        from mmalign.mllm.chat import response_slot

        if not card.question or "{prompt}" not in card.question:
            raise ValueError(f"scorer {card.name!r}: the card's question must contain {{prompt}}, got {card.question!r}")
        if not card.answers or len(card.answers) < 2:
            raise ValueError(f"scorer {card.name!r}: the card needs at least two answers, got {card.answers!r}")
        if card.answer_values is not None and len(card.answer_values) != len(card.answers):
            raise ValueError(f"scorer {card.name!r}: {len(card.answer_values)} answer_values for "
                             f"{len(card.answers)} answers")
        self.card = card
        self.name = card.name
        self.model = model
        self.processor = processor
        self.device = torch.device(device)
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.lead = response_slot(processor, self._messages("x", 1, card.question)).lead

    # ------------------------------------------------------------------------------------------ prompt building
    @staticmethod
    def _messages(prompt: str, n_images: int, question: str) -> list[dict]:
        parts = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question.format(prompt=prompt)}]
        return [{"role": "user", "content": parts}]

    def context(self, prompt: str, n_images: int = 1, question: str | None = None) -> str:
        """The text the model reads before its answer (chat template + generation prompt + answer lead)."""
        from mmalign.mllm.chat import render

        return render(self.processor, self._messages(prompt, n_images, question or self.card.question),
                      generation_prompt=True) + self.lead

    def answer_ids(self, answers: Sequence[str]) -> list[list[int]]:
        out = []
        for a in answers:
            ids = self.processor.tokenizer(a, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"scorer {self.name!r}: answer {a!r} tokenises to nothing")
            out.append(list(ids))
        return out

    # ------------------------------------------------------------------------------------------ log-probabilities
    def _encode(self, contexts: list[str], images: list) -> dict[str, torch.Tensor]:
        enc = self.processor(text=contexts, images=images, padding=True, return_tensors="pt")
        return {k: v for k, v in enc.items() if torch.is_tensor(v)}

    @staticmethod
    def _extend(enc: dict[str, torch.Tensor], suffix: list[int]) -> dict[str, torch.Tensor]:
        """``enc`` (left-padded) with ``suffix`` appended to every row (``[B, L]`` side inputs padded with 0)."""
        ids = enc["input_ids"]
        out = {}
        for key, value in enc.items():
            if value.ndim == 2 and value.shape == ids.shape:
                tail = (torch.tensor(suffix, dtype=value.dtype) if key == "input_ids" else
                        torch.ones(len(suffix), dtype=value.dtype) if key == "attention_mask" else
                        torch.zeros(len(suffix), dtype=value.dtype))
                value = torch.cat([value, tail.expand(ids.shape[0], -1)], dim=1)
            out[key] = value
        return out

    def _last_logps(self, enc: dict[str, torch.Tensor], keep: int) -> torch.Tensor:
        """Log-softmax ``[B, keep, V]`` (float32, CPU) of the last ``keep`` positions (``logits_to_keep``: the
        full ``[B, L, V]`` logits are never materialised)."""
        inputs = {k: v.to(self.device) for k, v in enc.items()}
        if "pixel_values" in inputs and torch.is_floating_point(inputs["pixel_values"]):
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        logits = self.model(**inputs, logits_to_keep=keep).logits[:, -keep:]
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    @torch.no_grad()
    def answer_logprobs(self, rows: list[list[Any]], prompts: list[str], question: str,
                        answers: Sequence[str]) -> torch.Tensor:
        """``[B, K]``: ``log p(answer_k | context)`` for rows of images (each row one context) and prompts."""
        contexts = [self.context(p, len(row), question) for row, p in zip(rows, prompts)]
        enc = self._encode(contexts, [im for row in rows for im in row])  # left padding: contexts end together
        ids = self.answer_ids(answers)
        out = torch.zeros(len(rows), len(ids), dtype=torch.float64)
        first = self._last_logps(enc, 1)[:, 0]  # [B, V]: predicts every answer's first token
        for k, a in enumerate(ids):
            if len(a) == 1:
                out[:, k] = first[:, a[0]].double()
                continue
            logps = self._last_logps(self._extend(enc, a), len(a) + 1)  # positions predicting a_0 ... a_{n-1}
            for j, token in enumerate(a):
                out[:, k] += logps[:, j, token].double()
        return out

    # ------------------------------------------------------------------------------------------ public
    def _combine(self, logps: torch.Tensor, raw: bool) -> torch.Tensor:
        probs = logps.exp()
        if self.card.answer_values is None:
            return (probs[:, 0] if raw else probs[:, 0] / probs.sum(-1)).float()
        values = torch.tensor(self.card.answer_values, dtype=torch.float64)
        return ((probs * values).sum(-1) / probs.sum(-1)).float()

    def score(self, images: Any, prompts: str | Sequence[str] | None = None, *, raw: bool = False,
              batch_size: int = 8) -> torch.Tensor:
        """Scores ``[B]`` (float32, CPU): p(yes) among the answers, or the expected rating (see the module)."""
        pil = to_pil_list(images)
        texts = broadcast_prompts(prompts, len(pil))
        out = [self._combine(self.answer_logprobs([[im] for im in pil[s:s + batch_size]], texts[s:s + batch_size],
                                                  self.card.question, self.card.answers), raw)
               for s in range(0, len(pil), batch_size)]
        return torch.cat(out) if out else torch.zeros(0)

    def compare(self, images_a: Any, images_b: Any, prompts: str | Sequence[str], *, batch_size: int = 8) -> torch.Tensor:
        """``[B]``: probability that image A is better than image B for its prompt (both orders averaged)."""
        if not self.card.pair_question or not self.card.pair_answers or len(self.card.pair_answers) != 2:
            raise ValueError(f"scorer {self.name!r}: pairwise mode needs pair_question and two pair_answers in the card")
        a, b = to_pil_list(images_a), to_pil_list(images_b)
        if len(a) != len(b):
            raise ValueError(f"compare: {len(a)} images A but {len(b)} images B")
        texts = broadcast_prompts(prompts, len(a))
        out = []
        for s in range(0, len(a), batch_size):
            sl = slice(s, s + batch_size)
            rows = [[x, y] for x, y in zip(a[sl], b[sl])] + [[y, x] for x, y in zip(a[sl], b[sl])]
            p = self.answer_logprobs(rows, texts[sl] * 2, self.card.pair_question, self.card.pair_answers).exp()
            q = p[:, 0] / p.sum(-1)  # P(first shown is better)
            n = len(rows) // 2
            out.append(((q[:n] + 1 - q[n:]) / 2).float())
        return torch.cat(out) if out else torch.zeros(0)

    def __repr__(self) -> str:
        return f"VLMJudgeScorer(name={self.name!r}, model={type(self.model).__name__}, device={self.device})"


def load_vlm_judge(card: ScorerCard, checkpoint: str | None, *, device: str | torch.device,
                   dtype: torch.dtype) -> VLMJudgeScorer:
    """The judge model through the one VLM loader (``AutoModelForImageTextToText`` + ``AutoProcessor``)."""
    from mmalign.mllm.model import load_vlm
    from mmalign.mllm.model_config import VLMModelConfig

    ref = checkpoint or card.default_checkpoint
    if ref is None:
        raise FileNotFoundError(f"scorer {card.name!r} needs checkpoint=<image-text-to-text model folder or hub id> "
                                "(Qwen2-VL, Qwen2.5-VL, LLaVA ...)")
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"scorer {card.name!r}: dtype must be one of {list(_DTYPE_NAMES.values())}")
    model, processor = load_vlm(VLMModelConfig(pretrained=str(ref), dtype=_DTYPE_NAMES[dtype]), device=device,
                                train_safe=False)
    model.requires_grad_(False)
    return VLMJudgeScorer(card, model, processor, device=device)
