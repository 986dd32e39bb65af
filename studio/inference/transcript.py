"""The shape of ``Chat.transcript``: plain JSON, the Hugging Face chat-template message form.

A side-by-side chat (``kind == "chat"``)::

    {"version": 1,
     "panes": [{"key": "base", "label": "Base model", "adapter_id": null,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"},
                                                          {"type": "image", "image": "chats/3/<sha>.png"}]},
                             {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}],
                              "meta": {"job_id": 7, "error": null, "stopped": false, "new_tokens": 3, ...}}]},
               {"key": "adapter-4", "label": "identity-lora (#4)", "adapter_id": 4, "messages": [...]}],
     "pending": {"job_id": 8, "message": {...}}}      # a message being answered right now, or null

A batch comparison (``kind == "compare"``)::

    {"version": 1, "columns": [{"key", "label", "adapter_id"}, ...], "source": {...},
     "rows": [{"prompt": {"text": "...", "images": ["datasets/2/images/<sha>.jpg"]},
               "answers": {"base": {"text": "...", "error": null, ...}, "adapter-4": {...}}}]}

Image paths are relative to the workspace (a workspace can be moved). Every pane keeps its own
history: the user turns are the same, the assistant turns are each pane's own answers.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

VERSION = 1
BASE_KEY = "base"


def pane_key(adapter_id: int | None) -> str:
    return BASE_KEY if adapter_id is None else f"adapter-{adapter_id}"


def pane(adapter_id: int | None, label: str) -> dict[str, Any]:
    return {"key": pane_key(adapter_id), "label": label, "adapter_id": adapter_id, "messages": []}


def new_chat(panes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"version": VERSION, "panes": panes, "pending": None}


def new_compare(columns: list[dict[str, Any]], prompts: list[dict[str, Any]], source: dict[str, Any]) -> dict[str, Any]:
    return {"version": VERSION, "columns": columns, "source": source,
            "rows": [{"prompt": p, "answers": {}} for p in prompts]}


# -- messages -----------------------------------------------------------------------------------------
def user_message(text: str, images: list[str] = ()) -> dict[str, Any]:
    """Images first, then the text: Qwen2.5-VL was trained with the picture before the question."""
    parts: list[dict[str, Any]] = [{"type": "image", "image": p} for p in images]
    if text:
        parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def assistant_message(text: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}], "meta": meta}


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if p.get("type") == "text")


def message_images(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return []
    return [p["image"] for p in content or [] if p.get("type") == "image"]


def prompt_history(messages: list[dict[str, Any]], resolve_image: Callable[[str], str]) -> list[dict[str, Any]]:
    """The history a model sees: turns whose answer failed are left out (an image sent to a text
    model would otherwise fail every later turn too); stopped answers stay, as the user saw them."""
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        m = messages[i]
        reply = messages[i + 1] if m["role"] == "user" and i + 1 < len(messages) else None
        if reply is not None and reply["role"] == "assistant" and (reply.get("meta") or {}).get("error"):
            i += 2
            continue
        out.append(_for_model(m, resolve_image))
        i += 1
    return out


def _for_model(message: dict[str, Any], resolve_image: Callable[[str], str]) -> dict[str, Any]:
    content = copy.deepcopy(message.get("content") or [])
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    for part in content:
        if part.get("type") == "image":
            part["image"] = resolve_image(part["image"])
    return {"role": message["role"], "content": content}
