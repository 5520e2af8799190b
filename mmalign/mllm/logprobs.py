"""Log-probabilities of label tokens under a causal LM's logits, without a full fp32 log-softmax.

Convention (TRL, ms-swift, LLaVA forks; spec/vlm_video_objectives.md §1.2):

* ``logits`` ``[B, T, V]`` come from one forward over ``input_ids`` ``[B, T]`` = prompt ⊕ completion.
* **Shift by one**: the logits at position ``i`` predict token ``i + 1``. So ``logits[:, :-1]`` are scored against
  ``labels[:, 1:]`` and masked with ``mask[:, 1:]``; per-token outputs have length ``T - 1`` and entry ``j`` is the
  log-prob of token ``j + 1``.
* ``labels`` are the unshifted token ids (usually ``input_ids``); ``mask`` is aligned with ``labels`` (1 on the tokens
  to score: completion tokens only, never prompt, visual placeholders or padding), e.g. TRL's ``completion_mask``.
  Positions whose label is ``-100`` (LLaVA-style expanded labels) are never scored, whatever the mask says.
* Summed completion log-probs are the score of the DPO family, KTO, BCO, RRPO, mDPO; mean log-probs for SimPO,
  ORPO (``reduction="mean"``). TRL's IPO normalises the summed log-ratio by the token count instead, which is why
  :func:`sequence_logps` also returns ``n_tokens``.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
_DEFAULT_CHUNK_ELEMENTS = 1 << 24  # 16M logits per chunk: 64 MiB in fp32


def _compute_dtype(logits: torch.Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 logits, float64 for float64 logits."""
    return torch.promote_types(logits.dtype, torch.float32)


def _chunk_rows(num_rows: int, vocab: int, max_chunk_elements: int) -> int:
    return max(1, min(num_rows, max_chunk_elements // max(vocab, 1)))


class _SelectiveLogSoftmax(torch.autograd.Function):
    """``logits[index] - logsumexp(logits)`` per row, chunked; the backward recomputes the softmax per chunk."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, index: torch.Tensor, max_chunk_elements: int) -> torch.Tensor:
        rows = logits.shape[0]
        dtype = _compute_dtype(logits)
        out = torch.empty(rows, dtype=dtype, device=logits.device)
        lse = torch.empty(rows, dtype=dtype, device=logits.device)
        step = _chunk_rows(rows, logits.shape[1], max_chunk_elements)
        for start in range(0, rows, step):
            chunk = logits[start : start + step].to(dtype)
            chunk_lse = torch.logsumexp(chunk, dim=-1)
            lse[start : start + step] = chunk_lse
            out[start : start + step] = chunk.gather(-1, index[start : start + step, None]).squeeze(-1) - chunk_lse
        ctx.save_for_backward(logits, index, lse)
        ctx.max_chunk_elements = max_chunk_elements
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, index, lse = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        rows = logits.shape[0]
        step = _chunk_rows(rows, logits.shape[1], ctx.max_chunk_elements)
        for start in range(0, rows, step):
            sl = slice(start, start + step)
            upstream = grad_out[sl, None].to(lse.dtype)
            probs = torch.exp(logits[sl].to(lse.dtype) - lse[sl, None])
            grad = -probs * upstream
            grad.scatter_add_(-1, index[sl, None], upstream)
            grad_logits[sl] = grad.to(logits.dtype)
        return grad_logits, None, None


def selective_log_softmax(
    logits: torch.Tensor, index: torch.Tensor, *, max_chunk_elements: int = _DEFAULT_CHUNK_ELEMENTS
) -> torch.Tensor:
    """``log_softmax(logits, -1).gather(-1, index)`` computed as ``logit[index] - logsumexp(logits)``, row-chunked.

    Only one chunk of rows (at most ``max_chunk_elements`` logits) is ever upcast to fp32, in the forward and in the
    backward (a custom autograd function recomputes the chunk's softmax instead of saving fp32 copies), so a
    ``B x T x V`` fp32 log-softmax is never materialised. The result is float32 for half/bf16/fp32 input (bf16/fp16
    logits are upcast per chunk, which is more accurate than a bf16 log-softmax) and float64 for float64 input. Same idea as TRL's
    ``selective_log_softmax``.

    Args:
        logits: ``[..., V]``.
        index: ``[...]`` token ids in ``[0, V)`` (no ``-100``; mask those first).
    Returns:
        float32 (float64 for float64 logits) tensor of shape ``index.shape``.
    """
    if logits.shape[:-1] != index.shape:
        raise ValueError(f"index shape {tuple(index.shape)} must equal logits.shape[:-1] {tuple(logits.shape[:-1])}")
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_index = index.reshape(-1).long()
    out = _SelectiveLogSoftmax.apply(flat_logits, flat_index, max_chunk_elements)
    return out.view(index.shape)


def token_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    max_chunk_elements: int = _DEFAULT_CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of ``labels[:, 1:]`` under ``logits[:, :-1]`` (shift-by-one convention, module docstring).

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]`` unshifted token ids; ``-100`` marks positions that are never scored.
        mask: ``[B, T]`` aligned with ``labels`` (1 = score this token); default: ``labels != -100``.

    Returns:
        ``(logps [B, T-1] float32, zero where not scored; scored [B, T-1] bool)``.
    """
    if logits.dim() != 3 or labels.dim() != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits [B, T, V] and labels [B, T] with the same B, T; got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if mask is not None and mask.shape != labels.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal labels shape {tuple(labels.shape)}")
    shift_labels = labels[:, 1:]
    scored = shift_labels != IGNORE_INDEX
    if mask is not None:
        scored = scored & mask[:, 1:].bool()
    safe_labels = torch.where(scored, shift_labels, torch.zeros_like(shift_labels))
    # Score all T positions (the last one against a dummy label, then dropped) instead of slicing
    # logits[:, :-1]: the slice is non-contiguous, and flattening it would copy the whole B x T x V tensor.
    next_labels = torch.cat([safe_labels, safe_labels.new_zeros(labels.shape[0], 1)], dim=1)
    logps = selective_log_softmax(logits, next_labels, max_chunk_elements=max_chunk_elements)[:, :-1]
    return logps.masked_fill(~scored, 0.0), scored


def sequence_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "sum",
    *,
    max_chunk_elements: int = _DEFAULT_CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion score of each row: sum (or mean) of the scored per-token log-probs.

    Args:
        logits, labels, mask: as :func:`token_logps` (shift by one: logits at ``i`` predict token ``i + 1``).
        reduction: ``"sum"`` (DPO family, KTO, BCO) or ``"mean"`` (SimPO, ORPO; rows with no scored token give 0).

    Returns:
        ``(logps [B] float32, n_tokens [B] long)``.
    """
    per_token, scored = token_logps(logits, labels, mask, max_chunk_elements=max_chunk_elements)
    n_tokens = scored.sum(dim=1)
    total = per_token.sum(dim=1)
    if reduction == "sum":
        return total, n_tokens
    if reduction == "mean":
        return total / n_tokens.clamp(min=1), n_tokens
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
