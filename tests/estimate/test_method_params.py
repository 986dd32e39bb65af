"""The estimator's trainable parameters equal what peft counts, for every preset of every method in the
table, on SmolLM2 (GQA, tied embeddings) and on a public untied config (Qwen2.5-7B shapes, biases),
and on the tiny Qwen2.5-VL for the methods the table marks vision-capable. The models are built on the
meta device from config.json (no weights): peft builds its adapters there as well."""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def boft_as_on_a_gpu(name: str):
    """peft builds BOFT's butterfly factors only where its CUDA extension loaded (elsewhere it silently
    builds one factor: plain OFT, which the studio refuses). Building the adapter does not call the
    extension, so marking peft's loader cache as loaded counts the parameters a GPU worker trains."""
    if name != "boft":
        yield
        return
    from peft.tuners.boft import layer

    saved, layer._FBD_CUDA = layer._FBD_CUDA, object()
    try:
        yield
    finally:
        layer._FBD_CUDA = saved


def peft_count(config: dict, kind: str, spec: RunSpec) -> int:
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    hf_config = AutoConfig.for_model(**config)
    with torch.device("meta"):
        cls = AutoModelForImageTextToText if kind == "vision-language" else AutoModelForCausalLM
        model = cls.from_config(hf_config)
    facts = ModelFacts(kind=kind, model_type=config["model_type"], config=config)
    peft_config = METHODS[spec.method.name].build_peft_config(spec, facts, 100)
    with boft_as_on_a_gpu(spec.method.name):
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


def test_boft_counts_every_butterfly_factor_and_its_square_size_buffers(smollm2_path):
    """BOFT's trainable count grows with the butterfly factor (factor x in x block per layer + out);
    its memory holds peft's dense in x in permutation buffers, which the estimate shows as a part."""
    config = json.loads((smollm2_path / "config.json").read_text())
    one = RunSpec(model="builtin:smollm2-135m-instruct", data={"path": "x.jsonl"},
                  method={"name": "boft", "block_size": 8, "butterfly_factor": 1}, train={"precision": "fp32"})
    two = one.model_copy(update={"method": one.method.model_copy(update={"butterfly_factor": 2})})
    assert estimated(config, two) == peft_count(config, "text", two)
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    assert estimated(config, two) - estimated(config, one) == 4 * layers * h * 8  # q, k, v, o: one more factor
    parts = est.estimate(estimate_request(two, config)).parts
    assert parts["boft_buffers"] == 4 * layers * 2 * h * h * 4  # 4 layers a block, 2 factors, h x h fp32
    assert parts["boft_workspace"] > 0
    assert "boft_buffers" not in est.estimate(estimate_request(spec_of("oft", "balanced"), config)).parts
