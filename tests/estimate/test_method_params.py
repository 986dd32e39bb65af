"""The estimator's trainable parameters equal what peft counts, for every preset of every method in the
table, on SmolLM2 (GQA, tied embeddings) and on a public untied config (Qwen2.5-7B shapes, biases),
and on the tiny Qwen2.5-VL for the methods the table marks vision-capable. The models are built on the
meta device from config.json (no weights): peft builds its adapters there as well."""
from __future__ import annotations

import json

import pytest
import torch

from studio import estimate as est
from studio.methods import METHODS, ModelFacts
from studio.planning import estimate_request
from studio.spec import RunSpec

# A Qwen2 config with untied embeddings and q/k/v biases, shrunk to 2 layers and a small vocabulary so
# that building it is quick; the shapes that matter (GQA 28/4 heads, 3584 hidden, 18944 MLP) are Qwen2.5-7B's.
QWEN2_UNTIED = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 3584,
                "intermediate_size": 18944, "num_hidden_layers": 2, "num_attention_heads": 28,
                "num_key_value_heads": 4, "vocab_size": 1024, "tie_word_embeddings": False,
                "max_position_embeddings": 4096, "rms_norm_eps": 1e-6}
# Presets whose initialisation needs real weights (an SVD or QR of them); their shapes are LoRA's.
NEEDS_WEIGHTS = {("lora", "pissa"), ("lora", "olora")}


def peft_count(config: dict, kind: str, spec: RunSpec) -> int:
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    hf_config = AutoConfig.for_model(**config)
    with torch.device("meta"):
        cls = AutoModelForImageTextToText if kind == "vision-language" else AutoModelForCausalLM
        model = cls.from_config(hf_config)
    facts = ModelFacts(kind=kind, model_type=config["model_type"], config=config)
    peft_config = METHODS[spec.method.name].build_peft_config(spec, facts, 100)
    trainable, _ = get_peft_model(model, peft_config).get_nb_trainable_parameters()
    return int(trainable)


def estimated(config: dict, spec: RunSpec) -> int:
    request = estimate_request(spec, config)
    return est.estimate(request).params["trainable"]


def cases(vision_only: bool = False):
    for name, method in METHODS.items():
        if vision_only and not method.vision:
            continue
        for preset in method.presets:
            if (name, preset) not in NEEDS_WEIGHTS:
                yield name, preset


def spec_of(name: str, preset: str, model: str = "builtin:smollm2-135m-instruct") -> RunSpec:
    return RunSpec(model=model, data={"path": "x.jsonl"}, method={"name": name, "preset": preset},
                   train={"precision": "fp32", "cutoff_len": 512})


@pytest.mark.parametrize("name, preset", list(cases()))
def test_trainable_parameters_match_peft_on_smollm2(smollm2_path, name, preset):
    config = json.loads((smollm2_path / "config.json").read_text())
    spec = spec_of(name, preset)  # QLoRA's adapter is LoRA's; quantisation does not change the count
    assert estimated(config, spec) == peft_count(config, "text", spec)


@pytest.mark.parametrize("name", [n for n in METHODS if n != "qlora"])
def test_trainable_parameters_match_peft_on_an_untied_model_with_biases(name):
    spec = spec_of(name, METHODS[name].default_preset)
    assert estimated(QWEN2_UNTIED, spec) == peft_count(QWEN2_UNTIED, "text", spec)


@pytest.mark.parametrize("name", [n for n in METHODS if METHODS[n].vision and n != "qlora"])
def test_trainable_parameters_match_peft_on_qwen2_5_vl(tiny_vl_small_path, name):
    config = json.loads((tiny_vl_small_path / "config.json").read_text())
    spec = spec_of(name, METHODS[name].default_preset)
    assert estimated(config, spec) == peft_count(config, "vision-language", spec)


def test_vera_is_an_order_of_magnitude_below_lora(smollm2_path):
    config = json.loads((smollm2_path / "config.json").read_text())
    vera, lora = estimated(config, spec_of("vera", "balanced")), estimated(config, spec_of("lora", "balanced"))
    assert 5 * vera < lora
