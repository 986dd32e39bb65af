"""Checking an export before it is offered: the merged model must behave as adapter-on-base.

The reference is the base (same dtype, same device) with the adapter attached but not merged:
exactly what the user chatted with. After merging, the saved folder is reloaded from disk with
plain transformers and run on the same inputs. Comparing the reload, not the in-memory merged
model, also proves the files are complete (every shard, the config, the tokenizer/processor).

Three checks, all recorded with their numbers:
1. ``max|merged - reference| <= atol + rtol * max|reference|``. Merged weights ``W + s*B@A`` are
   rounded once to the export dtype and summed in a different order than ``W@x + s*B@(A@x)``;
   the error grows with the logit scale, hence the relative part.
2. half precision only: top-1 (argmax) agreement >= 0.9 over the prompt positions where the
   reference's choice is decisive (its top-2 gap exceeds the tolerance; near-ties may flip).
3. the merged model is at least as close (mean |diff|) to the adapter-on-base as to the bare
   base: a dropped, half-applied or wrongly scaled adapter fails this whatever the dtype.

Why half precision is loose: rounding ``W + dW`` to bf16 is noise of the same size as running
the unmerged model in bf16 at all. Measured on SmolLM2-135M, LoRA r=8 (CPU, 2 prompts): bf16
adapter-on-base vs fp32 max 1.04 / mean 0.16; merged bf16 vs fp32 max 1.21 / mean 0.15 (as
faithful as the unmerged bf16 model); merged bf16 vs bf16 reference max 1.42 at logit scale 38.
In fp32 the same comparison gives 1e-4 (LoRA, QLoRA) to 9e-4 (AdaLoRA).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Few and short: on a CPU every probe costs a forward pass per model plus a short generation.
TEXT_PROMPTS = (
    "What is the capital of France?",
    "List three prime numbers.",
)
IMAGE_PROMPT = "Describe this image."
GREEDY_TOKENS = 8

# (atol, rtol, minimum top-1 agreement) per dtype.
TOLERANCES = {
    "float32": (1e-3, 1e-4, None),
    "float16": (5e-2, 1e-2, 0.9),
    "bfloat16": (1e-1, 8e-2, 0.9),
}


@dataclass
class Probe:
    name: str
    inputs: dict[str, Any]


@dataclass
class ProbeOutput:
    logits: Any  # float32 CPU tensor [seq, vocab]
    greedy: list[int]  # generated token ids only (first probe; empty for the others)
    base_logits: Any = None  # reference only: the same prompt with the adapter switched off


def probe_image():
    """A small deterministic picture (colour bars and a square) with real structure, so the vision
    tower sees something other than a flat colour. 84x56 = 3x2 merged 28-pixel patches."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (84, 56), (240, 240, 240))
    draw = ImageDraw.Draw(img)
    for i, colour in enumerate([(200, 30, 30), (30, 160, 60), (40, 60, 200)]):
        draw.rectangle([i * 28, 0, i * 28 + 27, 27], fill=colour)
    draw.rectangle([30, 32, 52, 52], fill=(20, 20, 20))
    return img


def build_probes(processor: Any, kind: str) -> list[Probe]:
    """Chat-formatted prompts (and one image prompt for vision-language models) as model inputs."""
    if kind == "vision-language":
        return [_image_probe(processor), _text_probe(processor, TEXT_PROMPTS[0], vl=True)]
    return [_text_probe(processor, p) for p in TEXT_PROMPTS]


def _text_probe(processor: Any, prompt: str, vl: bool = False) -> Probe:
    tokenizer = getattr(processor, "tokenizer", processor)
    content: Any = [{"type": "text", "text": prompt}] if vl else prompt
    templated = bool(getattr(tokenizer, "chat_template", None) or getattr(processor, "chat_template", None))
    if templated:
        text = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    else:  # a base (non-instruct) model: plain text is how it is used
        text = prompt
    if vl:
        inputs = processor(text=[text], return_tensors="pt")
    else:  # the template already holds the special tokens (a second BOS would skew the check)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=not templated)
    return Probe(f"text: {prompt}", dict(inputs))


def _image_probe(processor: Any) -> Probe:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": IMAGE_PROMPT}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[probe_image()], return_tensors="pt")
    return Probe(f"image: {IMAGE_PROMPT}", dict(inputs))


def same_inputs(a: list[Probe], b: list[Probe]) -> bool:
    """Whether two tokenizers/processors turned the probes into identical tensors."""
    import torch

    for pa, pb in zip(a, b, strict=True):
        if pa.inputs.keys() != pb.inputs.keys():
            return False
        if not all(torch.equal(pa.inputs[k], pb.inputs[k]) for k in pa.inputs):
            return False
    return True


def run_probes(model: Any, probes: list[Probe], greedy_tokens: int = GREEDY_TOKENS,
               with_base: bool = False) -> list[ProbeOutput]:
    """Logits on every prompt position; a short greedy continuation of the first prompt only
    (generation dominates the cost on a CPU). ``with_base`` (a PEFT model) also records the
    logits with the adapter disabled."""
    import torch

    outputs = []
    with torch.inference_mode():
        for i, probe in enumerate(probes):
            inputs = {k: v.to(model.device) for k, v in probe.inputs.items()}
            out = ProbeOutput(model(**inputs).logits[0].float().cpu(), [])
            if i == 0 and greedy_tokens:
                ids = model.generate(**inputs, max_new_tokens=greedy_tokens, do_sample=False, num_beams=1)
                out.greedy = ids[0, inputs["input_ids"].shape[1]:].tolist()
            if with_base:
                with model.disable_adapter():
                    out.base_logits = model(**inputs).logits[0].float().cpu()
            outputs.append(out)
    return outputs


def compare(reference: list[ProbeOutput], candidate: list[ProbeOutput], dtype: str,
            probes: list[Probe] | None = None) -> dict[str, Any]:
    """The numbers recorded on the export row; ``passed`` is the verdict (see the module doc)."""
    atol, rtol, min_top1 = TOLERANCES[dtype]
    scale = max(float(r.logits.abs().max()) for r in reference)
    tolerance = atol + rtol * scale
    per_probe = [_probe_numbers(ref, got, probes[i].name if probes else str(i), tolerance)
                 for i, (ref, got) in enumerate(zip(reference, candidate, strict=True))]
    max_diff = max(p["max_abs_diff"] for p in per_probe)
    top1 = min(p["top1_agreement_decisive"] for p in per_probe)
    to_adapter = _mean(p["mean_abs_diff"] for p in per_probe)
    to_base = _mean(p["mean_abs_diff_to_base"] for p in per_probe if p["mean_abs_diff_to_base"] is not None)
    checks = {
        "max_abs_diff_within_tolerance": max_diff <= tolerance,
        "top1_agreement": min_top1 is None or top1 >= min_top1,
        "closer_to_adapter_than_to_base": to_base is None or to_adapter <= to_base,
    }
    return {
        "method": "logits of the reloaded merged model vs the adapter attached to the base",
        "dtype": dtype, "max_abs_diff": max_diff, "logit_scale": scale, "tolerance": tolerance,
        "atol": atol, "rtol": rtol, "min_top1_agreement": min_top1, "top1_agreement_decisive": top1,
        "top1_agreement": min(p["top1_agreement"] for p in per_probe),
        "mean_abs_diff": to_adapter, "mean_abs_diff_to_base": to_base,
        "adapter_effect_max_abs": max((p["adapter_effect_max_abs"] or 0.0) for p in per_probe),
        "greedy_match": all(p["greedy_match"] for p in per_probe),
        "checks": checks, "probes": per_probe, "passed": all(checks.values()),
    }


def _probe_numbers(ref: ProbeOutput, got: ProbeOutput, name: str, tolerance: float) -> dict[str, Any]:
    diff = (ref.logits - got.logits).abs()
    has_base = ref.base_logits is not None
    agree = ref.logits.argmax(-1) == got.logits.argmax(-1)
    top2 = ref.logits.topk(2, dim=-1).values
    decisive = (top2[:, 0] - top2[:, 1]) > tolerance
    return {
        "probe": name,
        "tokens": int(ref.logits.shape[0]),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "mean_abs_diff_to_base": float((ref.base_logits - got.logits).abs().mean()) if has_base else None,
        "adapter_effect_max_abs": float((ref.base_logits - ref.logits).abs().max()) if has_base else None,
        "top1_agreement": float(agree.float().mean()),
        "top1_agreement_decisive": float(agree[decisive].float().mean()) if bool(decisive.any()) else 1.0,
        "decisive_positions": int(decisive.sum()),
        "greedy_match": ref.greedy == got.greedy,
        "greedy_reference": ref.greedy,
        "greedy_merged": got.greedy,
    }


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def compare_adapter_copy(src: Path, dst: Path, names: list[str]) -> dict[str, Any]:
    """An adapter export is verified byte for byte against the trained adapter's files, and its
    config must parse as a PEFT config."""
    from peft import PeftConfig

    mismatched = [n for n in names if sha256_file(src / n) != sha256_file(dst / n)]
    problem = None
    try:
        config = PeftConfig.from_pretrained(str(dst))
        peft_type = str(getattr(config.peft_type, "value", config.peft_type))
    except Exception as e:  # noqa: BLE001 - any parse failure means the package is unusable
        peft_type, problem = None, f"{type(e).__name__}: {e}"
    return {
        "method": "sha256 of every adapter file vs the trained adapter; adapter_config.json parsed by peft",
        "files": names,
        "mismatched": mismatched,
        "peft_type": peft_type,
        "config_error": problem,
        "passed": not mismatched and problem is None,
    }


# -- GGUF -----------------------------------------------------------------------------------------
# Chat-formatted conversations the GGUF's tokenizer and chat template must turn into exactly the
# ids the studio's tokenizer gives, and on which its logits are compared with the merged model's.
# Numbers, code, whitespace runs, non-Latin scripts and emoji are where pre-tokenizers differ.
GGUF_CONVERSATIONS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("user", "What is the capital of France?"),),
    (("user", "List three prime numbers."),),
    (("user", "Compute 12345 * 678 and 3.14159 / 2.71828."),),
    (("user", "Write a Python function that reverses a string:\n\ndef reverse(s):\n    ..."),),
    (("user", "Translate to Chinese: good morning"),),
    (("user", "你好，请介绍一下你自己。"),),
    (("user", "Summarise: The quick brown fox jumps over the lazy dog.   Twice!!"),),
    (("user", "Emoji test 🙂🚀 and accents: café, naïve, Zürich."),),
    (("system", "You are a terse assistant. Answer in one word."), ("user", "Colour of the sky?")),
    (("system", "Always answer in French."), ("user", "How are you?")),
    (("user", "Hi!"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke.")),
    (("user", "2 + 2 ="), ("assistant", "4"), ("user", "And 20 + 22?")),
    (("user", "Tabs\tand\nnewlines\n\n\nin the prompt"),),
    (("user", "   leading and trailing spaces   "),),
    (("user", "URLs: https://example.com/a?b=1&c=2 and emails: a.b@example.org"),),
    (("user", "JSON: {\"name\": \"Ada\", \"age\": 36, \"tags\": [\"math\", \"code\"]}"),),
    (("user", "What's the difference between it's and its? I'd like examples."),),
    (("user", "Markdown:\n# Title\n- item one\n- item two\n**bold** _italic_"),),
    (("system", "Reply with a haiku."), ("user", "The sea"), ("assistant", "Waves fold into foam"),
     ("user", "Now the mountains.")),
    (("user", "Count: 1, 10, 100, 1000, 10000, 100000, 1000000"),),
)

# (atol, rtol, minimum top-1 agreement) of the GGUF's logits against the merged model's, both in
# float32. Measured on SmolLM2-135M (logit scale ~40): F16 max diff 0.04, BF16 0.28; Q8_0 max
# diff ~1.3 with 95-97% top-1 agreement over every position (near-ties flip; see the card).
GGUF_TOLERANCES = {
    "f16": (5e-2, 5e-3, 0.98),
    "bf16": (1e-1, 2e-2, 0.95),
    "q8_0": (None, None, 0.95),
}


def gguf_conversations() -> list[list[dict[str, str]]]:
    return [[{"role": r, "content": c} for r, c in conv] for conv in GGUF_CONVERSATIONS]


def chat_ids(tokenizer: Any, conversation: list[dict[str, str]]) -> list[int]:
    """The ids the studio feeds the model for a chat turn: template, generation prompt, no extra BOS."""
    out = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def compare_tokenizers(studio_tokenizer: Any, gguf_tokenizer: Any) -> dict[str, Any]:
    """Whether the GGUF's own tokenizer + chat template reproduce the studio's prompt ids."""
    mismatches = []
    for i, conv in enumerate(gguf_conversations()):
        want, got = chat_ids(studio_tokenizer, conv), chat_ids(gguf_tokenizer, conv)
        if want != got:
            first = next((j for j, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            mismatches.append({"prompt": i, "text": conv[-1]["content"][:60], "first_difference_at": first,
                               "studio": want[first:first + 5], "gguf": got[first:first + 5]})
    return {"prompts": len(GGUF_CONVERSATIONS), "mismatches": mismatches,
            "same_chat_template": (studio_tokenizer.chat_template or "") == (gguf_tokenizer.chat_template or "")}


def gguf_logits(model: Any, id_lists: list[list[int]]) -> list[Any]:
    import torch

    with torch.inference_mode():
        return [model(torch.tensor([ids], device=model.device)).logits[0].float().cpu() for ids in id_lists]


def compare_gguf(reference: list[Any], candidate: list[Any], gguf_type: str) -> dict[str, Any]:
    """GGUF vs merged-model logits: max |diff| against a float tolerance for F16/BF16, top-1
    agreement over every prompt position for all types."""
    import torch

    atol, rtol, min_top1 = GGUF_TOLERANCES[gguf_type]
    scale = max(float(r.abs().max()) for r in reference)
    max_diff = max(float((r - c).abs().max()) for r, c in zip(reference, candidate, strict=True))
    mean_diff = float(torch.cat([(r - c).abs().flatten() for r, c in zip(reference, candidate)]).mean())
    agree = torch.cat([r.argmax(-1) == c.argmax(-1) for r, c in zip(reference, candidate)]).float()
    tolerance = None if atol is None else atol + rtol * scale
    checks = {"top1_agreement": float(agree.mean()) >= min_top1}
    if tolerance is not None:
        checks["max_abs_diff_within_tolerance"] = max_diff <= tolerance
    return {"gguf_type": gguf_type, "max_abs_diff": max_diff, "mean_abs_diff": mean_diff, "logit_scale": scale,
            "tolerance": tolerance, "top1_agreement": float(agree.mean()), "min_top1_agreement": min_top1,
            "positions": int(agree.numel()), "checks": checks}
