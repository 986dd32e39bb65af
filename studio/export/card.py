"""The model card (README.md) written into every export.

Everything comes from rows and files the studio already has: the Adapter, its Run (spec, losses,
times, memory), the Dataset, and the export's own verification. Missing facts (an adapter
imported without a run, say) are left out rather than guessed.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from storage.db import Database
from storage.models import Adapter, Dataset, Run
from studio.methods import METHODS



@dataclass
class CardFacts:
    kind: str  # merged | adapter
    model_kind: str  # text | vision-language
    title: str
    base_model_ref: str
    base_display_name: str
    method: str
    folder_name: str
    dtype: str | None = None
    shard_size: str | None = None
    method_settings: dict[str, Any] = field(default_factory=dict)
    train_settings: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] | None = None
    training_seconds: float | None = None
    final_loss: float | None = None
    final_eval_loss: float | None = None
    estimated_peak_bytes: int | None = None
    measured_peak_bytes: int | None = None
    run_id: int | None = None
    verification: dict[str, Any] = field(default_factory=dict)
    gguf_type: str | None = None
    gguf_file: str | None = None


# -- gathering ------------------------------------------------------------------------------------
def gather_facts(db: Database, adapter: Adapter, *, kind: str, model_kind: str, folder_name: str,
                 base_display_name: str, dtype: str | None = None, shard_size: str | None = None,
                 gguf_type: str | None = None, gguf_file: str | None = None) -> CardFacts:
    what = {"merged": "merged model", "adapter": "adapter"}.get(kind, f"GGUF {(gguf_type or '').upper()}")
    title = f"{adapter.name or folder_name} ({what})"
    facts = CardFacts(kind=kind, model_kind=model_kind, title=title,
                      base_model_ref=adapter.base_model_ref, base_display_name=base_display_name,
                      method=adapter.method, folder_name=folder_name, dtype=dtype, shard_size=shard_size,
                      gguf_type=gguf_type, gguf_file=gguf_file)
    with db.session() as s:
        run = s.get(Run, adapter.run_id) if adapter.run_id is not None else None
        if run is not None:
            _add_run_facts(db, s, run, facts)
    return facts


def _add_run_facts(db: Database, s: Any, run: Run, facts: CardFacts) -> None:
    spec = run_spec(db, run)
    facts.run_id = run.id
    method = dict(spec.get("method") or {})
    method.pop("name", None)
    facts.method_settings = method
    facts.train_settings = {k: v for k, v in (spec.get("train") or {}).items() if k in _TRAIN_KEYS}
    facts.final_loss, facts.final_eval_loss = run.final_loss, run.final_eval_loss
    facts.estimated_peak_bytes, facts.measured_peak_bytes = run.estimated_peak_bytes, run.measured_peak_bytes
    if run.started_at and run.finished_at:
        facts.training_seconds = (run.finished_at - run.started_at).total_seconds()
    dataset = s.get(Dataset, run.dataset_id) if run.dataset_id is not None else None
    if dataset is not None:
        facts.dataset = {"name": dataset.name, "format": dataset.format, "rows": dataset.num_rows,
                         "train": dataset.num_train, "validation": dataset.num_validation,
                         "images": dataset.num_images}


_TRAIN_KEYS = ("epochs", "max_steps", "learning_rate", "lr_scheduler", "batch_size", "grad_accum",
               "cutoff_len", "precision", "seed", "packing", "num_processes")


def run_spec(db: Database, run: Run) -> dict[str, Any]:
    """The run's resolved spec: ``runs/<id>/spec.yaml`` when present (what really ran), else the row."""
    path = db.workspace.run_dir(run.id) / "spec.yaml"
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        except yaml.YAMLError:
            pass
    return dict(run.spec or {})


# -- rendering ------------------------------------------------------------------------------------
def render(facts: CardFacts) -> str:
    parts = [_front_matter(facts), f"# {facts.title}\n", _summary(facts), _training_section(facts),
             _export_section(facts), _usage_section(facts),
             "---\nMade with Finetune Studio.\n"]
    return "\n".join(p for p in parts if p)


def _front_matter(f: CardFacts) -> str:
    if f.kind == "gguf":
        meta: dict[str, Any] = {"library_name": "gguf", "pipeline_tag": "text-generation",
                                "tags": ["finetune-studio", f.method, "gguf", "llama.cpp"]}
        if _hub_id(f.base_model_ref):
            meta["base_model"] = _hub_id(f.base_model_ref)
        return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"
    meta = {"library_name": "transformers" if f.kind == "merged" else "peft",
                            "pipeline_tag": "image-text-to-text" if f.model_kind == "vision-language"
                            else "text-generation",
                            "tags": ["finetune-studio", f.method] + (["merged"] if f.kind == "merged" else [])}
    if _hub_id(f.base_model_ref):
        meta["base_model"] = _hub_id(f.base_model_ref)
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _summary(f: CardFacts) -> str:
    known = METHODS.get(f.method)
    method = known.label if known else f.method
    what = (f"The {method} adapter merged into its base model: a standalone model that loads with plain "
            "transformers (no peft needed)." if f.kind == "merged" else
            f"The {method} adapter merged into its base model and written as one GGUF file "
            f"({(f.gguf_type or '').upper()}) for llama.cpp, Ollama and LM Studio." if f.kind == "gguf" else
            f"The {method} adapter alone: load it on top of its base model with peft.")
    if f.kind in ("merged", "gguf") and known and known.merge_note:
        what += " " + known.merge_note.format(dtype=f.dtype)
    return f"{what}\n\n- **Base model:** {f.base_display_name} (`{f.base_model_ref}`)\n- **Method:** {method}\n"


def _training_section(f: CardFacts) -> str:
    rows = []
    if f.method_settings:
        rows.append(("Method settings", _kv(f.method_settings)))
    if f.train_settings:
        rows.append(("Training settings", _kv(f.train_settings)))
    if f.dataset:
        d = f.dataset
        size = f"{d['rows']} rows ({d['train']} train, {d['validation']} validation" + (
            f", {d['images']} images)" if d.get("images") else ")")
        rows.append(("Dataset", f"{d['name']} ({d['format']}), {size}" if d.get("format") else f"{d['name']}, {size}"))
    for label, value in (("Training time", _duration(f.training_seconds)), ("Final training loss", _num(f.final_loss)),
                         ("Final eval loss", _num(f.final_eval_loss)),
                         ("Estimated peak memory", _bytes(f.estimated_peak_bytes)),
                         ("Measured peak memory", _bytes(f.measured_peak_bytes))):
        if value:
            rows.append((label, value))
    if not rows:
        return "## Training\n\nNo training record: this adapter was not trained by a run in this studio.\n"
    title = f"## Training (run {f.run_id})\n\n" if f.run_id else "## Training\n\n"
    return title + "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _export_section(f: CardFacts) -> str:
    v = f.verification or {}
    lines = ["## Export\n"]
    if f.kind == "merged":
        lines.append(f"- Weights: {f.dtype}, safetensors shards of at most {f.shard_size}")
        if v:
            lines.append(f"- Verified: {'yes' if v.get('passed') else 'NO'} - max logit difference to the adapter on "
                         f"the base {v.get('max_abs_diff', float('nan')):.2e} (tolerance {v.get('tolerance', 0):.2e}) "
                         f"over {len(v.get('probes', []))} prompts; greedy outputs "
                         f"{'identical' if v.get('greedy_match') else 'differ'}")
    elif f.kind == "gguf" and v:
        lines += _gguf_export_lines(f, v)
    elif v:
        lines.append(f"- Verified: {'yes' if v.get('passed') else 'NO'} - files identical (SHA-256) to the trained "
                     f"adapter; config parsed by peft as {v.get('peft_type')}")
    return "\n".join(lines) + "\n"


def _gguf_export_lines(f: CardFacts, v: dict[str, Any]) -> list[str]:
    conversion = v.get("conversion") or {}
    merged = v.get("merged_verification") or {}
    tokens = v.get("tokenizer") or {}
    types = ", ".join(f"{k} x{n}" for k, n in (conversion.get("tensor_types") or {}).items())
    lines = [f"- File: `{f.gguf_file}`, {(f.gguf_type or '').upper()} (tensors: {types}), written with "
             f"{conversion.get('writer', 'the gguf package')} from the merged {f.dtype} weights; "
             f"llama.cpp architecture `{conversion.get('architecture')}`, pre-tokenizer `{conversion.get('tokenizer_pre')}`",
             f"- Merged model verified against the adapter on the base: max logit difference "
             f"{merged.get('max_abs_diff', float('nan')):.2e} (tolerance {merged.get('tolerance') or 0:.2e})",
             f"- GGUF verified: {'yes' if v.get('passed') else 'NO'} - read back with transformers' GGUF loader; "
             f"logits on {tokens.get('prompts', 0)} chat prompts ({v.get('positions', 0)} positions) vs the merged "
             f"model: max difference {v.get('max_abs_diff', float('nan')):.3g}, mean {v.get('mean_abs_diff', float('nan')):.3g}"
             f" (logit scale {v.get('logit_scale', float('nan')):.3g}), top-1 agreement {v.get('top1_agreement', 0):.1%}"
             f" (required {v.get('min_top1_agreement') or 0:.0%})"
             + (f", tolerance {v['tolerance']:.3g}" if v.get("tolerance") is not None else ""),
             f"- Tokenizer: the GGUF's own tokenizer and chat template give the studio's prompt ids on "
             f"{tokens.get('prompts', 0) - len(tokens.get('mismatches') or [])} of {tokens.get('prompts', 0)} prompts"]
    return lines


def _usage_section(f: CardFacts) -> str:
    folder = f.folder_name
    if f.kind == "gguf":
        return _gguf_usage(f)
    if f.kind == "adapter":
        base = _hub_id(f.base_model_ref) or "PATH/TO/BASE/MODEL"
        note = "" if _hub_id(f.base_model_ref) else (
            f"\n`{f.base_model_ref}` is a Finetune Studio model reference: point `base` at that model's folder "
            "(`python -c \"from studio.models import prepare; print(prepare('" + f.base_model_ref + "'))\"`).\n")
        return _adapter_usage(folder, base, f.model_kind) + note
    return _merged_usage(folder, f.model_kind)


def _merged_usage(folder: str, model_kind: str) -> str:
    if model_kind == "vision-language":
        return f"""## How to load

```python
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

path = "{folder}"  # the unzipped folder
processor = AutoProcessor.from_pretrained(path)
model = AutoModelForImageTextToText.from_pretrained(path, dtype="auto")
messages = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "Describe this image."}}]}}]
text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
inputs = processor(text=[text], images=[Image.open("photo.jpg")], return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=128)
print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""
    return f"""## How to load

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

path = "{folder}"  # the unzipped folder
tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
messages = [{{"role": "user", "content": "Hello!"}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**inputs, max_new_tokens=128)
print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```
"""


def _gguf_usage(f: CardFacts) -> str:
    name = f.folder_name.lower()[:60]
    m = (f.verification or {}).get("modelfile") or {}
    template = (f"the chat format ({m['chat_format']}) checked against the model's chat template"
                if m.get("chat_format") else "no TEMPLATE (the chat template matches no format the export can "
                "translate; Ollama reads the one stored in the GGUF when it recognises it)")
    system = {"run": "the system prompt every training example of the run started with",
              "chat template default": "the chat template's default system prompt"}.get(m.get("system_source"), "none")
    return f"""## How to run it

The GGUF file carries the weights, the tokenizer and the chat template.

**llama.cpp**

```sh
llama-cli -m {f.gguf_file} -cnv          # chat in the terminal, using the chat template in the file
llama-server -m {f.gguf_file} --port 8080 # OpenAI-compatible server at http://localhost:8080
```

**Ollama** (the `Modelfile` beside the GGUF: {template}; stop tokens {", ".join(f"`{x}`" for x in m.get("stops") or []) or "none"};
system prompt: {system})

```sh
ollama create {name} -f Modelfile
ollama run {name}
```

**LM Studio**: `lms import {f.gguf_file}` (or copy the file into `~/.lmstudio/models/finetune-studio/{name}/`),
then pick it in the model list; the chat template comes from the file.

**Python**: `AutoModelForCausalLM.from_pretrained(".", gguf_file="{f.gguf_file}")` (transformers + `gguf`;
dequantised to full precision).
"""


def _adapter_usage(folder: str, base: str, model_kind: str) -> str:
    auto = "AutoModelForImageTextToText" if model_kind == "vision-language" else "AutoModelForCausalLM"
    loader = "AutoProcessor" if model_kind == "vision-language" else "AutoTokenizer"
    return f"""## How to load

```python
from peft import PeftModel
from transformers import {auto}, {loader}

base = "{base}"
model = {auto}.from_pretrained(base, dtype="auto")
model = PeftModel.from_pretrained(model, "{folder}")  # the unzipped folder
processor = {loader}.from_pretrained(base)
# optional: model = model.merge_and_unload()  (merge in bf16/fp32, never into a 4-bit model)
```
"""


# -- formatting -----------------------------------------------------------------------------------
def _hub_id(ref: str) -> str | None:
    text = ref.removeprefix("hub:")
    if ref.startswith(("builtin:", "local:", "/", ".", "~")) or text.count("/") != 1:
        return None
    return text.split("@", 1)[0]


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in d.items() if v is not None and v != {} and v != [])


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + _kv(v) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _num(x: float | None) -> str | None:
    return None if x is None else f"{x:.4f}"


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return str(dt.timedelta(seconds=round(seconds)))


def _bytes(n: int | None) -> str | None:
    if n is None:
        return None
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def write(facts: CardFacts, folder: Path) -> Path:
    path = folder / "README.md"
    path.write_text(render(facts), encoding="utf-8")
    return path
