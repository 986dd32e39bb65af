"""An Ollama Modelfile for a GGUF export: FROM, TEMPLATE, stop tokens and the system prompt.

Ollama templates are Go templates, Hugging Face chat templates are Jinja: there is no general
translation. The chat formats the studio's models use are recognised instead (ChatML: SmolLM2,
Qwen2/2.5; Llama 3), and a format is only used after rendering several conversations with the
model's own Jinja template and with the format gives identical text. The template's built-in
default system prompt (SmolLM2 and Qwen2.5 have one) becomes the Modelfile's SYSTEM, so a chat
without a system message renders as it did in the studio. A template that matches no format is
left out: Ollama then falls back to the chat template stored in the GGUF when it recognises it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE = "\x00sample\x00"  # content no real template treats specially


@dataclass(frozen=True)
class ChatFormat:
    name: str
    block: str  # one message: "{role}" and "{content}" placeholders
    generation: str  # what opens the assistant's reply
    stops: tuple[str, ...]
    bos: str = ""  # text the Jinja template starts with (the runtime adds BOS itself)

    def render(self, conversation: list[dict[str, str]], default_system: str | None) -> str:
        text = self.bos
        if default_system is not None and conversation[0]["role"] != "system":
            text += self.block.format(role="system", content=default_system)
        for m in conversation:
            text += self.block.format(role=m["role"], content=m["content"])
        return text + self.generation

    def go_template(self) -> str:
        system = self.block.format(role="system", content="{{ .System }}")
        message = self.block.format(role="{{ .Role }}", content="{{ .Content }}")
        # System messages reach the template as .System (from the chat or the Modelfile's SYSTEM);
        # the loop skips them so they are not written twice. No "-" trim markers next to the
        # blocks: ChatML's newline after <|im_end|> is part of the format.
        return (f"{{{{- if .System }}}}{system}{{{{ end }}}}\n"
                f"{{{{- range .Messages }}}}{{{{ if ne .Role \"system\" }}}}{message}{{{{ end }}}}{{{{ end }}}}"
                f"{self.generation}")


FORMATS = (
    ChatFormat("chatml", "<|im_start|>{role}\n{content}<|im_end|>\n", "<|im_start|>assistant\n", ("<|im_end|>",)),
    ChatFormat("llama3", "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>",
               "<|start_header_id|>assistant<|end_header_id|>\n\n", ("<|eot_id|>",), bos="<|begin_of_text|>"),
)

_CHECKS = (
    [{"role": "user", "content": "Hello"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"}, {"role": "user", "content": "Three"}],
)


@dataclass
class Detected:
    format: ChatFormat | None
    default_system: str | None


def detect_format(tokenizer: Any) -> Detected:
    """The chat format the tokenizer's Jinja template produces, checked by rendering."""
    if not getattr(tokenizer, "chat_template", None):
        return Detected(None, None)
    for fmt in FORMATS:
        try:
            default = _default_system(tokenizer, fmt)
            if all(_jinja(tokenizer, conv) == fmt.render(conv, default) for conv in _CHECKS):
                return Detected(fmt, default)
        except Exception:  # noqa: BLE001 - a template that raises on a check conversation is not this format
            continue
    return Detected(None, None)


def _jinja(tokenizer: Any, conversation: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


def _default_system(tokenizer: Any, fmt: ChatFormat) -> str | None:
    """The system text the template inserts when a chat has none (None: it inserts nothing)."""
    text = _jinja(tokenizer, [{"role": "user", "content": SAMPLE}]).removeprefix(fmt.bos)
    prefix, suffix = fmt.block.format(role="system", content=SAMPLE).split(SAMPLE)
    if not text.startswith(prefix):
        return None
    end = text.find(suffix, len(prefix))
    return text[len(prefix):end] if end >= 0 else None


def modelfile(gguf_name: str, tokenizer: Any, system_prompt: str | None) -> tuple[str, dict[str, Any]]:
    """The Modelfile text and what went into it (for the card and the export row)."""
    detected = detect_format(tokenizer)
    system = system_prompt or (detected.default_system if detected.format else None)
    stops = list(detected.format.stops) if detected.format else []
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(eos)
    lines = ["# Ollama Modelfile written by Finetune Studio. Run: ollama create NAME -f Modelfile", f"FROM ./{gguf_name}", ""]
    if detected.format:
        lines += [f"# chat format: {detected.format.name} (checked against the model's chat template)",
                  f'TEMPLATE """{detected.format.go_template()}"""', ""]
    else:
        lines += ["# No TEMPLATE: the model's chat template matches no format this export can translate;",
                  "# Ollama uses the chat template stored in the GGUF when it recognises it.", ""]
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    if system and '"""' not in system:
        lines += ["", f'SYSTEM """{system}"""']
    text = "\n".join(lines) + "\n"
    return text, {"chat_format": detected.format.name if detected.format else None, "stops": stops,
                  "system_prompt": system, "system_source": "run" if system_prompt else
                  ("chat template default" if system else None)}


def shared_system_prompt(train_jsonl: Path, limit: int = 2000) -> str | None:
    """The system message every training row starts with, if they all share one (the run's
    system prompt); None when rows have none or differ."""
    if not train_jsonl.is_file():
        return None
    prompt: str | None = None
    with open(train_jsonl, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= limit:
                break
            if not line.strip():
                continue
            messages = json.loads(line).get("messages") or []
            first = messages[0] if messages else {}
            if first.get("role") != "system":
                return None
            text = _text(first.get("content"))
            if prompt is None:
                prompt = text
            elif text != prompt:
                return None
    return prompt or None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")
