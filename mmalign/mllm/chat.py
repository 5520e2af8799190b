"""Typed chat content: how the VLM and the video collators build and render chat messages.

Chat templates of the llava-hf checkpoints (LLaVA-1.5, LLaVA-NeXT-Video, LLaVA-OneVision, LLaVA-Video) render
only *typed* content parts (``message['content'] | selectattr('type', 'equalto', 'text')``): a plain-string
``content`` renders as nothing. Qwen-VL templates accept both. So every message given to a template here has
list content of typed parts — ``{"type": "text", "text": ...}``, ``{"type": "image"}``, ``{"type": "video"}`` —
which every family renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]

_SENTINEL = "\u00a7RESPONSE\u00a7"


def typed_content(content: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``content`` as a list of typed parts (a string becomes one text part; parts are copied)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [dict(p) for p in (content or [])]


def typed_messages(messages: list[Message], n_media: int = 0, media: str = "image") -> list[Message]:
    """Messages with typed-part content; ``n_media`` ``{"type": media}`` parts are inserted before the first user
    turn's content, less those already present (TRL ``prepare_multimodal_messages``)."""
    out = [{**m, "content": typed_content(m.get("content"))} for m in messages]
    present = sum(1 for m in out for p in m["content"] if p.get("type") == media)
    missing = n_media - present
    if missing > 0:
        first_user = next((m for m in out if m["role"] == "user"), None)
        if first_user is None:
            raise ValueError(f"conversational prompt has no user turn to attach the {media}s to")
        first_user["content"] = [{"type": media} for _ in range(missing)] + first_user["content"]
    return out


def user_turn(text: str, media: str | None = None) -> list[Message]:
    """One user message: an optional ``{"type": media}`` part, then the text."""
    parts = ([{"type": media}] if media else []) + [{"type": "text", "text": text}]
    return [{"role": "user", "content": parts}]


def assistant_turn(text: str) -> Message:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def render(processor: Any, messages: list[Message], generation_prompt: bool = False,
           continue_final: bool = False) -> str:
    """The chat-templated text of typed ``messages`` (not tokenised)."""
    return processor.apply_chat_template(typed_messages(messages), tokenize=False,
                                         add_generation_prompt=generation_prompt,
                                         continue_final_message=continue_final)


@dataclass(frozen=True)
class ResponseSlot:
    """Where a response sits in a rendered conversation, relative to the generation prompt.

    ``lead``: text a rendered assistant turn has between the generation prompt and the response (LLaVA-1.5's
    ``" "`` after ``ASSISTANT:``; empty for Qwen-VL and OneVision); ``suffix``: text after the response up to the
    end of the conversation (Qwen ``<|im_end|>\\n``, OneVision ``<|im_end|>``, LLaVA-1.5 ``" "``)."""

    lead: str
    suffix: str


def response_slot(processor: Any, prompt_messages: list[Message]) -> ResponseSlot:
    """The :class:`ResponseSlot` of the processor's template after ``prompt_messages``.

    The llava-hf OneVision template opens an assistant turn with ``<|im_start|>assistant \\n`` but its generation
    prompt is ``<|im_start|>assistant\\n``; then the generation prompt (what the model sees when it answers) is
    kept and ``lead`` is empty."""
    base = render(processor, prompt_messages)
    gen = render(processor, prompt_messages, generation_prompt=True)
    full = render(processor, prompt_messages + [assistant_turn(_SENTINEL)])
    if full.count(_SENTINEL) != 1 or not gen.startswith(base) or not full.startswith(base):
        raise ValueError(
            "cannot derive the completion suffix: the chat template does not render the assistant's typed text "
            f"part once after the prompt (prompt {gen!r}, with an assistant turn {full!r})"
        )
    before, suffix = full.split(_SENTINEL)
    return ResponseSlot(lead=before[len(gen):] if before.startswith(gen) else "", suffix=suffix)
