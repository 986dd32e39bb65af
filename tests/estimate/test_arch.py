"""Parameter counts from config.json alone, checked against published counts."""
from __future__ import annotations

import pytest

from studio.estimate import EstimateRequest, list_models, lookup_config, resolve_name
from studio.estimate.arch import ModelArch
from studio.estimate.configs import UnknownModel
from studio.estimate import formulas as f

# The real SmolLM2-135M-Instruct config.json fields (the model the studio's integration tests use).
SMOLLM2_135M = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
                "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
                "max_position_embeddings": 8192}


def test_smollm2_135m_parameter_count():
    arch = ModelArch.from_config(SMOLLM2_135M)
    assert arch.head_dim == 64 and arch.kv_dim == 192
    assert arch.total_params == 134_515_008  # ~134.5 M, the published size
    assert arch.total_params == ModelArch.from_config(lookup_config("smollm2-135m")).total_params


def test_llama_3_2_3b_matches_peft_benchmark_count():
    # huggingface/peft method_comparison full-finetuning result: num_total_params 3212749824
    assert ModelArch.from_config(lookup_config("meta-llama/Llama-3.2-3B")).total_params == 3_212_749_824


@pytest.mark.parametrize("method,extra,expected", [
    ("lora", {}, 9_175_040),            # peft results: lora--llama-3.2-3B-rank32.json
    ("dora", {}, 9_289_728),            # lora--llama-3.2-3B-rank32-dora.json
    # adalora--llama-3.2-3B-rank32.json: 18,353,664, + 56 ``ranknum`` parameters (28 layers x q, v) that
    # peft 0.21 marks trainable (get_nb_trainable_parameters counts them; tests/estimate/test_method_params.py)
    ("adalora", {"adalora_init_rank": 64}, 18_353_664 + 56),
])
def test_adapter_params_match_peft(method, extra, expected):
    req = EstimateRequest(config=lookup_config("llama-3.2-3b"), method=method, lora_rank=32,
                          targets=("q_proj", "v_proj"), **extra)
    assert f.adapter_params(ModelArch.from_config(req.config), req) == expected


@pytest.mark.parametrize("name,billions", [
    ("Qwen/Qwen2.5-0.5B-Instruct", 0.49), ("Qwen/Qwen2.5-7B-Instruct", 7.62), ("Qwen/Qwen2.5-72B-Instruct", 72.7),
    ("Qwen/Qwen2.5-VL-7B-Instruct", 8.29), ("Qwen/Qwen2.5-VL-3B-Instruct", 3.75),
    ("meta-llama/Llama-3.1-8B-Instruct", 8.03), ("meta-llama/Llama-3.1-70B-Instruct", 70.55),
    ("google/gemma-2-2b-it", 2.61), ("microsoft/Phi-3.5-mini-instruct", 3.82), ("mistralai/Mistral-7B-Instruct-v0.3", 7.25),
])
def test_published_sizes(name, billions):
    assert ModelArch.from_config(lookup_config(name)).total_params / 1e9 == pytest.approx(billions, abs=0.01)


def test_every_bundled_config_parses_and_has_a_source():
    for name in list_models():
        cfg = lookup_config(name)
        arch = ModelArch.from_config(cfg)
        assert arch.total_params > 1e8 and cfg["_source"]
        if "VL" in name:
            assert arch.vision and arch.vision.patch == 14 and arch.vision.merge == 2


def test_lookup_by_alias_hub_id_and_nested_text_config():
    assert resolve_name("qwen2.5-7b") == resolve_name("Qwen/Qwen2.5-7B") == "Qwen/Qwen2.5-7B-Instruct"
    assert resolve_name("SMOLLM2-135M-INSTRUCT") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(UnknownModel):
        resolve_name("no-such-model")
    flat = lookup_config("qwen2.5-vl-3b")
    text = {k: flat[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                 "num_key_value_heads", "vocab_size", "tie_word_embeddings")}
    nested = {"model_type": "qwen2_5_vl", "text_config": text, "vision_config": flat["vision_config"]}
    assert ModelArch.from_config(nested).total_params == ModelArch.from_config(flat).total_params
