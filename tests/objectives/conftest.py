"""Shared fixture for the TRL parity tests: a tiny random causal LM pair and a locally built tokenizer."""

import pytest
import torch

WORDS = "the a cat dog sat ran on mat fast slow red blue big small is was and or".split()


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory):
    """Word-level tokenizer (``tokenizers``, wrapped as ``PreTrainedTokenizerFast`` with pad/eos), a tiny random
    ``LlamaForCausalLM`` reference and a perturbed policy (``policy != reference``), built fresh on each call so
    TRL's in-place patches (fused LM head) never leak between tests."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, eos_token_id=1, bos_token_id=None,
    )
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    reference_state = LlamaForCausalLM(config).state_dict()
    policy_state = {
        k: v + 0.2 * torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in reference_state.items()
    }

    def build(state):
        model = LlamaForCausalLM(config)
        model.load_state_dict(state)
        return model

    return {
        "tokenizer": tokenizer,
        "policy": lambda: build(policy_state),
        "reference": lambda: build(reference_state),
        "out": tmp_path_factory.mktemp("trl_out"),
    }

