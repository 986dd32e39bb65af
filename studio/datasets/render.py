"""The one renderer of a canonical row: messages (+ tools) -> the text the model is trained on.

Training (``studio.training.data``), the dataset statistics (``studio.datasets.stats``) and chat
(``studio.inference.engine``) all call ``render``, so the token histogram measures exactly what
trains and a chat prompt is formatted exactly as the adapter saw its rows. No torch import: the
template owner (a tokenizer or a VL processor) is passed in.
"""
from __future__ import annotations

from typing import Any

VISION_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"  # Qwen2.5-VL's image tokens in ChatML


def template_messages(messages: list[dict[str, Any]], vision: bool) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: plain strings for text models (many templates
    concatenate ``content``); parts with bare ``{"type": "image"}`` placeholders for VL models."""
    out = []
    for m in messages:
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
        if vision:
            out.append({"role": m["role"], "content": [
                {"type": "image"} if p.get("type") == "image" else {"type": "text", "text": p.get("text", "")}
                for p in parts]})
        else:
            out.append({"role": m["role"], "content": "".join(p.get("text", "") for p in parts
                                                              if p.get("type") == "text")})
    return out


def template_owner_of(processing: Any) -> Any:
    """The object whose chat template applies: a processor's own, else its tokenizer's."""
    for obj in (processing, getattr(processing, "tokenizer", None)):
        if obj is not None and getattr(obj, "chat_template", None):
            return obj
    return None


def render(processing: Any, messages: list[dict[str, Any]], *, tools: list | None = None,
           generation_prompt: bool = False, image_placeholder: str = VISION_PLACEHOLDER) -> str:
    """``messages`` (already in template form) through the model's chat template, with the row's
    tool definitions when it has them; ChatML when the model has no template (a base model)."""
    if not messages:
        return ""
    owner = template_owner_of(processing)
    if owner is None:
        return chatml(messages, generation_prompt, image_placeholder)
    kwargs = {"tools": tools} if isinstance(tools, list) and tools else {}
    return owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt, **kwargs)


def render_row(processing: Any, row: dict[str, Any], vision: bool, generation_prompt: bool = False,
               image_placeholder: str = VISION_PLACEHOLDER) -> str:
    return render(processing, template_messages(row["messages"], vision), tools=row.get("tools"),
                  generation_prompt=generation_prompt, image_placeholder=image_placeholder)


def chatml(messages: list[dict[str, Any]], generation_prompt: bool = False,
           image_placeholder: str = VISION_PLACEHOLDER) -> str:
    def text(content: Any) -> str:
        if isinstance(content, str):
            return content
        return "".join(p.get("text", "") if p.get("type") == "text" else image_placeholder for p in content)

    out = "".join(f"<|im_start|>{m['role']}\n{text(m['content'])}<|im_end|>\n" for m in messages)
    return out + ("<|im_start|>assistant\n" if generation_prompt else "")
