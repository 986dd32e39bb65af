"""A merged model folder (safetensors + tokenizer) -> one GGUF file for llama.cpp, Ollama, LM Studio.

Built on the `gguf` package (llama.cpp's own Python library, on PyPI): ``GGUFWriter`` writes the
file, ``get_tensor_name_map`` gives the tensor names llama.cpp expects for the architecture,
``SpecialVocab`` reads merges, special token ids, add-BOS/EOS flags and the chat template, and
``gguf.quants`` quantises with numpy (no compiler). What this module adds is what llama.cpp's
``convert_hf_to_gguf.py`` does for these two architectures:

- Llama family: q/k projection rows are permuted from the Hugging Face rotary layout to the one
  llama.cpp's rope expects (``LlamaModel.permute`` there; transformers' GGUF loader reverses it).
- Qwen2/2.5: no permutation (llama.cpp runs them with NeoX rope), q/k/v biases kept.
- Norms and biases stay F32; matrices become the requested type; a matrix whose rows do not
  split into whole quantisation blocks falls back to F16, as llama.cpp does.
- Vocabulary: every id up to the embedding size, added tokens typed CONTROL (special) or
  USER_DEFINED, unused ids as ``[PADn]``; ``tokenizer.ggml.pre`` names the pre-tokenizer the
  tokenizer really uses, so llama.cpp splits text as the studio did during training.

The file is written tensor by tensor (header first, then each tensor loaded, converted and
appended), so memory holds one tensor at a time, not the model.
"""
from __future__ import annotations

import errno
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from studio.export.errors import ExportError

OnTensor = Callable[[int, int, str], None]  # (done, total, tensor name)


class GgufUnsupportedError(ExportError):
    """The model cannot be written as GGUF by this converter (architecture, rope, tokenizer)."""


class DiskFullError(ExportError):
    """The disk holding the workspace filled up while the GGUF was written."""


@dataclass(frozen=True)
class Architecture:
    gguf_name: str  # llama.cpp's architecture name, a key of gguf.MODEL_ARCH_NAMES' values
    permute_qk: bool  # Llama's rotary layout differs between HF and llama.cpp; Qwen2's does not


# Hugging Face architecture (config.json) -> how llama.cpp runs it. Mistral-style configs load as
# Llama in llama.cpp too, but transformers reads a "llama" GGUF back as Llama; keep to what we verify.
ARCHITECTURES = {
    "LlamaForCausalLM": Architecture("llama", permute_qk=True),
    "Qwen2ForCausalLM": Architecture("qwen2", permute_qk=False),
}
SUPPORTED_TEXT = "Llama family (incl. SmolLM2) and Qwen2/Qwen2.5 text models"

# Output types offered, with llama.cpp's file-type code. Q4_K_M / Q5_K_M need llama.cpp's C
# quantiser: `gguf.quants` can only read those types, not write them.
FILE_TYPES = {"f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}
TENSOR_TYPES = {"f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}

GGML_QUANT_VERSION = 2  # the value llama.cpp writes as general.quantization_version


# -- what can be converted (config.json only: no torch, no weights) -------------------------------
def check_config(config: dict[str, Any]) -> Architecture:
    """The architecture to write, or GgufUnsupportedError saying why this model cannot be."""
    archs = config.get("architectures") or []
    arch = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
    if arch is None:
        what = ", ".join(archs) or config.get("model_type") or "unknown"
        vl = " Vision-language models need a separate projector file (mmproj) that this export does not write." \
            if "text_config" in config or "vision_config" in config else ""
        raise GgufUnsupportedError(f"GGUF export covers {SUPPORTED_TEXT}; this model is {what}.{vl} "
                                   "Export the merged model (safetensors) instead.")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type != "default":
        raise GgufUnsupportedError(f"the model uses {rope_type!r} rope scaling, which this GGUF export does not "
                                   "write yet (llama.cpp stores it as extra tensors); export the merged model instead")
    if config.get("use_sliding_window"):
        raise GgufUnsupportedError("the model uses sliding-window attention, which this GGUF export does not write")
    return arch


def check_tokenizer_json(tokenizer_json: dict[str, Any]) -> str:
    """``tokenizer.ggml.pre`` for a byte-level BPE tokenizer, or GgufUnsupportedError."""
    model = tokenizer_json.get("model") or {}
    decoder = tokenizer_json.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise GgufUnsupportedError("the tokenizer is not a byte-level BPE (GPT-2 style); SentencePiece tokenizers "
                                   "(Llama 2, Mistral) are not written by this GGUF export yet")
    return pre_tokenizer_name(tokenizer_json.get("pre_tokenizer") or {})


def pre_tokenizer_name(pre: dict[str, Any]) -> str:
    """llama.cpp's name for how text is split before BPE (each name means one fixed regex there)."""
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "smollm"  # llama.cpp: single digits, then the GPT-2 regex
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        name = _split_regex_names().get((parts[0].get("pattern") or {}).get("Regex"))
        if name:
            return name
    raise GgufUnsupportedError(f"the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) is not one "
                               "llama.cpp knows by name; llama.cpp would split text differently from training")


# Names llama.cpp writes for these regexes (convert_hf_to_gguf's hash table), in preference order.
_PREFERRED_PRE = ("qwen2", "llama-bpe", "gpt-4o", "tekken", "qwen35")


def _split_regex_names() -> dict[str, str]:
    """regex -> llama.cpp pre-tokenizer name, from the table transformers' GGUF reader uses to
    rebuild the split: a name chosen here is one the reader turns back into the same regex."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    names: dict[str, str] = {}
    for name in _PREFERRED_PRE:
        if name in GGUF_PRE_TOKENIZER_SPLITS:
            names.setdefault(GGUF_PRE_TOKENIZER_SPLITS[name], name)
    return names


def estimated_bytes(num_parameters: int, gguf_type: str) -> int:
    """Size of the file, for the free-space check (metadata and the vocabulary add a few MB)."""
    per_param = {"f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}[gguf_type]
    return int(num_parameters * per_param) + 32 * 2**20


# -- writing --------------------------------------------------------------------------------------
@dataclass
class TensorPlan:
    gguf_name: str
    hf_name: str
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    permute_heads: tuple[int, int] | None = None  # (n_head, n_head_kv) for llama q/k


def write(model_dir: Path, out_path: Path, gguf_type: str, *, name: str, on_tensor: OnTensor | None = None) -> dict:
    """Convert ``model_dir`` (a merged HF folder) into ``out_path``. Returns a summary for the card."""
    import gguf

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    arch = check_config(config)
    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pre = check_tokenizer_json(tokenizer_json)
    plan = _plan_tensors(model_dir, config, arch, gguf_type)
    _check_free_space(out_path.parent, sum(_nbytes(p) for p in plan))

    writer = gguf.GGUFWriter(out_path, arch.gguf_name)
    try:
        _add_metadata(writer, config, arch, gguf_type, name)
        _add_vocab(writer, model_dir, config, pre)
        for p in plan:
            writer.add_tensor_info(p.gguf_name, _stored_shape(p), _stored_dtype(p), _nbytes(p), raw_dtype=p.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for i, (p, data) in enumerate(zip(plan, _converted(model_dir, plan), strict=True)):
            writer.write_tensor_data(data)
            if on_tensor:
                on_tensor(i + 1, len(plan), p.gguf_name)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFullError(f"the disk holding {out_path.parent} is full: the GGUF file needs about "
                                f"{sum(_nbytes(p) for p in plan) / 2**30:.2f} GiB; free some space and export again") from e
        raise
    finally:
        writer.close()
    counts: dict[str, int] = {}
    for p in plan:
        counts[p.qtype.name] = counts.get(p.qtype.name, 0) + 1
    return {"architecture": arch.gguf_name, "tokenizer_pre": pre, "tensors": len(plan), "tensor_types": counts,
            "file_type": FILE_TYPES[gguf_type], "writer": f"gguf {_gguf_version()} (GGUFWriter)"}


def _plan_tensors(model_dir: Path, config: dict, arch: Architecture, gguf_type: str) -> list[TensorPlan]:
    import gguf

    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch.gguf_name)
    names = gguf.get_tensor_name_map(arch_enum, int(config["num_hidden_layers"]))
    wanted = gguf.GGMLQuantizationType[TENSOR_TYPES[gguf_type]]
    n_head, n_kv = int(config["num_attention_heads"]), int(config.get("num_key_value_heads") or config["num_attention_heads"])
    plan = []
    for hf_name, shape in _hf_tensor_shapes(model_dir):
        if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # tied: llama.cpp reuses token_embd, and no output.weight tells readers so
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise GgufUnsupportedError(f"tensor {hf_name} of the merged model has no llama.cpp name for "
                                       f"{arch.gguf_name}; this model variant is not supported by the GGUF export")
        permute = None
        if arch.permute_qk and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            permute = (n_head, n_head)
        elif arch.permute_qk and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            permute = (n_head, n_kv)
        plan.append(TensorPlan(gguf_name, hf_name, shape, _tensor_type(shape, wanted), permute))
    return plan


def _tensor_type(shape: tuple[int, ...], wanted: Any) -> Any:
    import gguf

    if len(shape) < 2:
        return gguf.GGMLQuantizationType.F32  # norms and biases: tiny, and precision-sensitive
    block = gguf.GGML_QUANT_SIZES[wanted][0]
    if shape[-1] % block:
        return gguf.GGMLQuantizationType.F16  # llama.cpp's fallback when rows do not split into blocks
    return wanted


def _stored_shape(p: TensorPlan) -> tuple[int, ...]:
    import gguf

    if p.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return p.shape
    return tuple(gguf.quant_shape_to_byte_shape(p.shape, p.qtype))


def _stored_dtype(p: TensorPlan) -> Any:
    import gguf
    import numpy as np

    return {gguf.GGMLQuantizationType.F32: np.float32, gguf.GGMLQuantizationType.F16: np.float16}.get(p.qtype, np.uint8)


def _nbytes(p: TensorPlan) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[p.qtype]
    elements = 1
    for d in p.shape:
        elements *= d
    return elements // block * size


def _hf_tensor_shapes(model_dir: Path) -> Iterator[tuple[str, tuple[int, ...]]]:
    from safetensors import safe_open

    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                yield key, tuple(f.get_slice(key).get_shape())


def _converted(model_dir: Path, plan: list[TensorPlan]) -> Iterator[Any]:
    """Each planned tensor, loaded alone, permuted if needed, in its GGUF type (in plan order)."""
    import gguf
    from safetensors import safe_open

    where = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            where.update({k: file for k in f.keys()})
    for p in plan:
        with safe_open(str(where[p.hf_name]), framework="pt") as f:
            data = f.get_tensor(p.hf_name).float().numpy()
        if p.permute_heads:
            data = _permute(data, *p.permute_heads)
        yield gguf.quants.quantize(data, p.qtype)


def _permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """HF rotary layout (halves) -> llama.cpp's (interleaved pairs), per head; what llama.cpp's
    ``LlamaModel.permute`` does. k has only ``n_head_kv`` heads."""
    heads = n_head_kv
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _add_metadata(writer: Any, config: dict, arch: Architecture, gguf_type: str, name: str) -> None:
    import gguf

    hidden, n_head = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or hidden // n_head)
    rope = config.get("rope_parameters") or {}
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings") or 4096))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or n_head))
    writer.add_rope_freq_base(float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-6))
    writer.add_vocab_size(int(config["vocab_size"]))
    if arch.gguf_name == "llama":
        writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // n_head:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(gguf.LlamaFileType[FILE_TYPES[gguf_type]])
    if gguf_type not in ("f16", "bf16"):
        writer.add_quantization_version(GGML_QUANT_VERSION)


def _add_vocab(writer: Any, model_dir: Path, config: dict, pre: str) -> None:
    """Tokens, their types, merges, special ids and the chat template (llama.cpp's get_vocab_base)."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab_size = int(config["vocab_size"])
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    if max(reverse) >= vocab_size:
        raise GgufUnsupportedError(f"the tokenizer has ids up to {max(reverse)} but the model only {vocab_size} "
                                   "embeddings; the merged model and its tokenizer do not belong together")
    added = tokenizer.get_added_vocab()
    added_decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if added_decoder[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    # Say explicitly whether plain encoding adds BOS/EOS, as the studio's tokenizer does: llama.cpp's
    # default differs by pre-tokenizer, and a chat template that writes its own special tokens
    # (SmolLM2's, Qwen's) would otherwise get a second one.
    probe = tokenizer("a")["input_ids"]
    special.add_special_token.setdefault("bos", tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id])
    special.add_special_token.setdefault("eos", tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id])
    special.add_to_gguf(writer, quiet=True)
    if not special.merges:
        raise GgufUnsupportedError(f"{model_dir / 'tokenizer.json'} has no BPE merges; the GGUF could not tokenize")


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + 64 * 2**20:
        raise DiskFullError(f"not enough free disk space for the GGUF file: it needs about {needed / 2**30:.2f} GiB, "
                            f"{free / 2**30:.2f} GiB are free at {folder}; free some space and export again")


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")
