"""mmalign.mllm.logprobs: selective log-softmax equals log_softmax + gather (fp32, bf16, grads, chunking)."""

import pytest
import torch

from mmalign.mllm.logprobs import selective_log_softmax, sequence_logps, token_logps


def reference_gather(logits, index):
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, index.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("chunk", [1 << 24, 7 * 50, 50])  # one chunk, several rows per chunk, one row per chunk
def test_selective_log_softmax_matches_log_softmax_fp32(chunk):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 50, generator=gen) * 4
    index = torch.randint(0, 50, (3, 5), generator=gen)
    out = selective_log_softmax(logits, index, max_chunk_elements=chunk)
    assert out.dtype == torch.float32 and out.shape == (3, 5)
    torch.testing.assert_close(out, reference_gather(logits, index), rtol=0, atol=1e-5)


def test_selective_log_softmax_bf16_input():
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(2, 6, 300, generator=gen) * 5).bfloat16()
    index = torch.randint(0, 300, (2, 6), generator=gen)
    out = selective_log_softmax(logits, index, max_chunk_elements=600)
    assert out.dtype == torch.float32
    # exact against an fp32 log-softmax of the same bf16 values ...
    torch.testing.assert_close(out, reference_gather(logits, index), rtol=0, atol=1e-5)
    # ... and within bf16 resolution of a bf16 log-softmax
    bf16_ref = torch.log_softmax(logits, -1).gather(-1, index[..., None]).squeeze(-1).float()
    torch.testing.assert_close(out, bf16_ref, rtol=2e-2, atol=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_selective_log_softmax_gradient_matches_autograd(dtype):
    gen = torch.Generator().manual_seed(2)
    base = torch.randn(4, 3, 40, generator=gen)
    index = torch.randint(0, 40, (4, 3), generator=gen)
    weights = torch.randn(4, 3, generator=gen)
    ours = base.clone().to(dtype).requires_grad_()
    ref = base.clone().to(dtype).requires_grad_()
    (selective_log_softmax(ours, index, max_chunk_elements=80) * weights).sum().backward()
    (reference_gather(ref, index) * weights).sum().backward()
    assert ours.grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(ours.grad.float(), ref.grad.float(), rtol=tol, atol=tol)


def test_selective_log_softmax_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    index = torch.randint(0, 7, (2, 3), generator=gen)
    assert torch.autograd.gradcheck(lambda x: selective_log_softmax(x, index, max_chunk_elements=14), (logits,))


def test_sequence_logps_shift_mask_and_reductions():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 11, generator=gen)
    labels = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])  # completion tokens, aligned with labels
    logp = torch.log_softmax(logits, -1)
    # logits at position i predict token i + 1
    row0 = logp[0, 1, 3] + logp[0, 2, 4] + logp[0, 3, 5]
    row1 = logp[1, 0, 7] + logp[1, 1, 8]
    total, n = sequence_logps(logits, labels, mask)
    torch.testing.assert_close(total, torch.stack([row0, row1]), rtol=0, atol=1e-5)
    assert n.tolist() == [3, 2]
    mean, _ = sequence_logps(logits, labels, mask, reduction="mean")
    torch.testing.assert_close(mean, torch.stack([row0 / 3, row1 / 2]), rtol=0, atol=1e-5)

    per_token, scored = token_logps(logits, labels, mask)
    assert per_token.shape == (2, 4) and scored.tolist() == [[False, True, True, True], [True, True, False, False]]
    assert (per_token[~scored] == 0).all()


def test_ignore_index_labels_are_never_scored():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 4, 9, generator=gen)
    labels = torch.tensor([[-100, -100, 3, 4]])  # LLaVA-style expanded labels, no mask
    logp = torch.log_softmax(logits, -1)
    total, n = sequence_logps(logits, labels)
    assert n.tolist() == [2]
    torch.testing.assert_close(total, (logp[0, 1, 3] + logp[0, 2, 4]).reshape(1), rtol=0, atol=1e-5)
    masked_total, masked_n = sequence_logps(logits, labels, torch.ones_like(labels))
    assert masked_n.tolist() == [2] and torch.equal(masked_total, total)


def test_bad_shapes_and_reduction():
    with pytest.raises(ValueError, match="logits"):
        sequence_logps(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="mask shape"):
        token_logps(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 2))
    with pytest.raises(ValueError, match="reduction"):
        sequence_logps(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), reduction="max")


def test_backward_keeps_no_fp32_copy_of_bf16_logits():
    """Only the bf16 logits (and [N] vectors) are saved for backward; the fp32 softmax is recomputed per chunk."""
    logits = torch.randn(2, 8, 64).bfloat16().requires_grad_()
    index = torch.randint(0, 64, (2, 8))
    saved = []

    def pack(tensor):
        saved.append((tensor.dtype, tuple(tensor.shape)))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = selective_log_softmax(logits, index, max_chunk_elements=128)
    big = [(dtype, shape) for dtype, shape in saved if len(shape) > 1 and shape[-1] == 64]
    assert big and all(dtype == torch.bfloat16 for dtype, _ in big), saved
    out.sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


def test_token_logps_gradient_matches_log_softmax_path():
    gen = torch.Generator().manual_seed(6)
    base = torch.randn(2, 6, 13, generator=gen)
    labels = torch.randint(0, 13, (2, 6), generator=gen)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]])
    ours = base.clone().requires_grad_()
    ref = base.clone().requires_grad_()
    sequence_logps(ours, labels, mask, max_chunk_elements=26)[0].sum().backward()
    ref_logp = torch.log_softmax(ref[:, :-1], -1).gather(-1, labels[:, 1:, None]).squeeze(-1)
    (ref_logp * mask[:, 1:]).sum().backward()
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-6, atol=1e-7)
    assert (ours.grad[:, -1] == 0).all()  # the last position predicts nothing
