"""Typed chat content (mmalign.mllm.chat), shared by the VLM and the video collators, on the real chat-template
styles of the tiny families: llava-hf LLaVA-1.5 and LLaVA-OneVision (typed parts only) and Qwen-VL ChatML."""

import pytest

from mmalign.mllm.chat import ResponseSlot, assistant_turn, render, response_slot, typed_messages, user_turn
from mmalign.testing import tiny_onevision, tiny_video, tiny_vlm


@pytest.fixture(scope="module")
def processors():
    tok = tiny_vlm.build_tokenizer()
    return {"llava": tiny_vlm.build_processor("llava", tok), "llavaov": tiny_onevision.build_processor(),
            "qwen2vl": tiny_video.build_video_processor("qwen2vl", tok)}


def test_typed_messages_converts_strings_and_inserts_media():
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "image"}]},
            {"role": "user", "content": "What is it?"}]
    out = typed_messages(msgs, n_media=3)
    assert out[0]["content"] == [{"type": "text", "text": "be brief"}]
    assert out[1]["content"] == [{"type": "image"}] * 3  # one present, two inserted before the first user text
    assert out[2]["content"] == [{"type": "text", "text": "What is it?"}]
    assert msgs[1]["content"] == [{"type": "image"}]  # input untouched
    assert typed_messages([{"role": "user", "content": "q"}], 1, "video")[0]["content"][0] == {"type": "video"}
    with pytest.raises(ValueError, match="no user turn"):
        typed_messages([{"role": "assistant", "content": "a"}], n_media=1)


@pytest.mark.parametrize("family", ["llava", "llavaov"])
def test_llava_hf_templates_drop_string_content(family, processors):
    """Why the conversion exists: a plain-string turn renders as nothing under the llava-hf templates."""
    proc = processors[family]
    plain = proc.apply_chat_template([{"role": "user", "content": "What is it?"}], tokenize=False)
    assert "What is it?" not in plain
    assert "What is it?" in render(proc, [{"role": "user", "content": "What is it?"}])


@pytest.mark.parametrize("family,prompt,slot", [
    ("llava", "USER: <image>\nq ASSISTANT:", ResponseSlot(lead=" ", suffix=" ")),
    ("llavaov", "<|im_start|>user <image>\nq<|im_end|><|im_start|>assistant\n", ResponseSlot("", "<|im_end|>")),
    ("qwen2vl", "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>q<|im_end|>\n<|im_start|>assistant\n",
     ResponseSlot("", "<|im_end|>\n")),
])
def test_response_slot_per_template(family, prompt, slot, processors):
    proc = processors[family]
    msgs = user_turn("q", media="image")
    assert render(proc, msgs, generation_prompt=True) == prompt
    assert response_slot(proc, msgs) == slot
    # prompt + lead + response + suffix is the rendered conversation, except OneVision's assistant header space
    full = render(proc, msgs + [assistant_turn("It is red.")])
    expected = prompt + slot.lead + "It is red." + slot.suffix
    assert full == (expected.replace("assistant\n", "assistant \n") if family == "llavaov" else expected)


def test_template_without_assistant_text_is_a_clear_error(processors):
    proc = processors["llava"]
    broken = proc.chat_template.replace("{{ content['text'] + ' '}}{% endgeneration %}", "{% endgeneration %}")
    assert broken != proc.chat_template
    proc = tiny_vlm.build_processor("llava", proc.tokenizer)
    proc.chat_template = broken
    with pytest.raises(ValueError, match="cannot derive the completion suffix"):
        response_slot(proc, user_turn("q"))
