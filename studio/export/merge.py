"""Merging an adapter into its base model, in full precision, and writing a plain HF folder.

Rules learnt the hard way (PLATFORM.md):
- Never merge into quantized weights: a QLoRA adapter trained on a 4-bit base is attached to a
  full-precision (bf16/fp16/fp32) reload of the base instead; merging into nf4 is lossy.
- ``merge_and_unload`` consumes the PEFT model: anything that needs the adapter (saving it,
  reference outputs) must happen before.
The output folder is what ``AutoModelForCausalLM`` / ``AutoModelForImageTextToText`` and
``AutoTokenizer`` / ``AutoProcessor`` load exactly as they load the original base folder.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from studio.export.errors import ExportError

# Files a tokenizer or processor may live in; an adapter folder holding one of these (training
# that added tokens, say) wins over the base model's own tokenizer.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "processor_config.json", "preprocessor_config.json")
FULL_PRECISION = ("float32", "bfloat16", "float16")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("device 'cuda' was asked for but no CUDA GPU is visible to the export job")
    return device


def resolve_dtype(dtype: str, base_path: Path) -> str:
    """``auto`` means the dtype the base was saved in, when that is a full-precision one; a
    quantized or unknown base dtype falls back to float32 (exact, twice the size of bf16)."""
    if dtype != "auto":
        return dtype
    try:
        cfg = json.loads((base_path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    text_cfg = cfg.get("text_config") or {}
    saved = cfg.get("dtype") or cfg.get("torch_dtype") or text_cfg.get("dtype") or text_cfg.get("torch_dtype")
    return saved if saved in FULL_PRECISION else "float32"


def load_adapter_on_base(base_path: Path, adapter_path: Path, kind: str, dtype: str, device: str,
                         trust_remote_code: bool = False) -> Any:
    """The base in full precision with the adapter attached (not merged): the reference model."""
    from peft import PeftModel

    from studio.models import load_model

    base = load_model(base_path, kind, dtype=dtype, device_map=None if device == "cpu" else device,
                      trust_remote_code=trust_remote_code)
    if getattr(base, "is_quantized", False) or getattr(base.config, "quantization_config", None):
        raise ExportError(f"the base model at {base_path} is stored quantized; a merged export needs the "
                          "full-precision base (merging into quantized weights is lossy). Export the adapter alone.")
    model = PeftModel.from_pretrained(base, str(adapter_path), is_trainable=False)
    model.eval()
    return model


def merge(peft_model: Any) -> Any:
    """Fold the adapter into the base weights; ``safe_merge`` refuses NaNs instead of saving them."""
    from studio.methods.freeze import unload_whole_modules, wraps_whole_modules

    if wraps_whole_modules(peft_model):  # freeze / full fine-tuning: the trained blocks take the originals' place
        merged = unload_whole_modules(peft_model, merge=True)
        merged.eval()
        return merged
    try:
        merged = peft_model.merge_and_unload(safe_merge=True)
    except ValueError as e:
        raise ExportError(f"merging the adapter failed: {e} (the adapter has NaN weights: its training "
                          "diverged; retrain with a lower learning rate)") from e
    except AttributeError as e:  # prompt/prefix tuning: peft has no merge for virtual tokens
        raise ExportError(f"this adapter type cannot be merged into the base model ({e}); export the adapter "
                          "alone instead") from e
    merged.eval()
    return merged


def save_merged(merged: Any, out_dir: Path, shard_size: str) -> list[str]:
    """safetensors shards of at most ``shard_size`` (+ index), config.json and generation_config.json."""
    _drop_peft_leftovers(merged)
    merged.save_pretrained(out_dir, max_shard_size=shard_size)
    return sorted(p.name for p in out_dir.glob("*.safetensors"))


def _drop_peft_leftovers(model: Any) -> None:
    # The merged model is plain transformers; a stale peft marker would make from_pretrained look
    # for an adapter instead of weights.
    for attr in ("_hf_peft_config_loaded", "peft_config"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                pass


def tokenizer_source(base_path: Path, adapter_path: Path) -> Path:
    return adapter_path if any((adapter_path / f).is_file() for f in TOKENIZER_FILES) else base_path


def save_tokenizer(base_path: Path, adapter_path: Path, kind: str, out_dir: Path,
                   trust_remote_code: bool = False) -> Any:
    """Tokenizer (text) or processor (VL: tokenizer, image/video processor configs, chat template)."""
    from studio.models import load_tokenizer_or_processor

    processor = load_tokenizer_or_processor(tokenizer_source(base_path, adapter_path), kind,
                                            trust_remote_code=trust_remote_code)
    processor.save_pretrained(out_dir)
    _copy_missing_chat_template(base_path, out_dir)
    return processor


def _copy_missing_chat_template(base_path: Path, out_dir: Path) -> None:
    # Older folders keep the template in a separate file the tokenizer may not re-save.
    for name in ("chat_template.jinja", "chat_template.json"):
        if (base_path / name).is_file() and not (out_dir / name).exists():
            shutil.copy2(base_path / name, out_dir / name)


def copy_adapter(adapter_path: Path, out_dir: Path) -> list[str]:
    """The adapter alone: its files copied as they are (config + safetensors, and a tokenizer if it
    has one), never re-saved, so the bytes are the trained ones."""
    names = []
    for src in sorted(adapter_path.iterdir()):
        if src.is_file() and not src.is_symlink() and src.name != "README.md":
            shutil.copy2(src, out_dir / src.name)
            names.append(src.name)
    if "adapter_config.json" not in names:
        raise ExportError(f"{adapter_path} has no adapter_config.json: not a PEFT adapter folder")
    return names
