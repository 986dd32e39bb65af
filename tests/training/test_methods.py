"""Every method in the one table has the same shape, and builds configs peft and bitsandbytes accept."""
from __future__ import annotations

import re

import pytest
import torch

from studio.methods import METHODS, ModelFacts
from studio.methods.base import resolve_targets
from studio.spec import LR_MAX, LR_MIN, RunSpec, VisionSettings

SMOLLM2_CONFIG = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                  "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
TEXT = ModelFacts(kind="text", model_type="llama", config=SMOLLM2_CONFIG)
VL = ModelFacts(kind="vision-language", model_type="qwen2_5_vl")


def spec_for(method: str, **method_fields) -> RunSpec:
    return RunSpec(model="builtin:smollm2-135m-instruct", data={"path": "x.jsonl"},
                   method={"name": method, **method_fields}, train={"precision": "fp32"})


@pytest.mark.parametrize("name", list(METHODS))
def test_method_has_presets_explanations_and_a_default_rate(name):
    m = METHODS[name]
    assert m.default_preset in m.presets
    for preset in m.presets.values():
        assert preset.name == name
        assert isinstance(preset, m.settings_cls)
    for text in (m.explain.summary, m.explain.memory, m.explain.speed, m.explain.when):
        assert len(text) > 30
    assert LR_MIN <= m.default_learning_rate <= LR_MAX


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("preset", ["default"])
def test_every_preset_builds_a_peft_config(name, preset):
    m = METHODS[name]
    for preset_name in m.presets:
        spec = spec_for(name, preset=preset_name)
        assert m.validate(spec, 100) == []
        config = m.build_peft_config(spec, TEXT, 100)
        assert config.task_type == "CAUSAL_LM"
        if name == "adalora":
            assert config.total_step == 100 and config.tinit == 10 and config.tfinal == 20


def test_lora_defaults_follow_published_practice():
    s = METHODS["lora"].preset()
    assert (s.r, s.alpha, s.dropout, s.targets.mode) == (16, 32, 0.0, "all-linear")
    assert METHODS["lora"].default_learning_rate == 2e-4
    cfg = METHODS["lora"].build_peft_config(spec_for("lora", use_dora=True, use_rslora=True), TEXT, 10)
    assert cfg.use_dora and cfg.use_rslora and cfg.lora_alpha == 32


def test_targets_attention_all_linear_and_custom():
    lora = METHODS["lora"]
    assert lora.build_peft_config(spec_for("lora", targets={"mode": "all-linear"}), TEXT, 1).target_modules == "all-linear"
    attn = lora.build_peft_config(spec_for("lora", targets={"mode": "attention"}), TEXT, 1).target_modules
    assert {"q_proj", "k_proj", "v_proj", "o_proj"} <= set(attn)
    custom = lora.build_peft_config(spec_for("lora", targets={"mode": "custom", "custom": ["q_proj", "v_proj"]}), TEXT, 1)
    assert set(custom.target_modules) == {"q_proj", "v_proj"}
    assert lora.validate(spec_for("lora", targets={"mode": "custom", "custom": []}))[0].field == "method.targets.custom"


@pytest.mark.parametrize("tower, projector, visual_blocks, merger", [
    ("frozen", "frozen", False, False),
    ("lora", "frozen", True, False),
    ("frozen", "lora", False, True),
    ("lora", "lora", True, True),
])
def test_vision_tower_and_projector_get_lora_only_when_asked(tiny_vl_small_path, tower, projector, visual_blocks, merger):
    from peft import get_peft_model

    from studio.models import load_model

    model = load_model(tiny_vl_small_path, "vision-language", dtype=torch.float32)
    spec = spec_for("lora")
    spec.vision = VisionSettings(vision_tower=tower, projector=projector)
    peft_model = get_peft_model(model, METHODS["lora"].build_peft_config(spec, VL, 10))
    adapted = {n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_parameters() if ".lora_A." in n}
    assert any("language_model" in n for n in adapted)
    assert any(re.search(r"visual\.blocks", n) for n in adapted) == visual_blocks
    assert any("visual.merger" in n for n in adapted) == merger
    assert not any(n.endswith("lm_head") for n in adapted)


def test_projector_full_training_uses_modules_to_save():
    spec = spec_for("lora")
    spec.vision = VisionSettings(projector="full")
    out = resolve_targets(spec.method.targets, VL, spec.vision)
    assert out["modules_to_save"] == ["merger"]
    assert re.fullmatch(out["exclude_modules"], "model.visual.merger.mlp.0")


def test_qlora_bitsandbytes_configs():
    q = METHODS["qlora"]
    four = q.quantization_config(spec_for("qlora"), TEXT)
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.float32  # follows the run's precision (fp32 here)
    assert four.llm_int8_skip_modules == ["lm_head"]
    no_dq = q.quantization_config(spec_for("qlora", double_quant=False), TEXT)
    assert not no_dq.bnb_4bit_use_double_quant
    eight = q.quantization_config(spec_for("qlora", bits=8), VL)
    assert eight.load_in_8bit and "model.visual" in eight.llm_int8_skip_modules and "lm_head" in eight.llm_int8_skip_modules


def test_qlora_without_bitsandbytes_is_a_problem(monkeypatch):
    import studio.methods.qlora as qlora

    monkeypatch.setattr(qlora, "package_available", lambda name: False)
    problems = qlora.validate(spec_for("qlora"))
    assert any("bitsandbytes" in p.message for p in problems)


def test_adalora_schedule_needs_enough_steps():
    a = METHODS["adalora"]
    spec = spec_for("adalora", tinit=5, tfinal=5)
    assert [p.field for p in a.validate(spec, 10)] == ["method.tinit"]
    assert a.validate(spec, 30) == []
    assert a.validate(spec_for("adalora", init_r=4, target_r=8), 100)[0].field == "method.target_r"
    cfg = a.build_peft_config(spec_for("adalora", init_r=12, target_r=4, deltaT=2), TEXT, 50)
    assert (cfg.init_r, cfg.target_r, cfg.deltaT, cfg.total_step, cfg.tinit, cfg.tfinal) == (12, 4, 2, 50, 5, 10)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_qlora_kernel_check_passes_where_bitsandbytes_computes_correctly(precision):
    """The worker's check runs bitsandbytes' 4-bit matmul (forward and backward) on this machine's
    kernels against PyTorch on the de-quantised weight; on both CPU kinds in use it must agree."""
    from studio.methods.qlora import kernel_problems

    if precision == "bf16" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        precision = "fp32"  # bf16 is refused on CPUs without it before this check runs
    assert kernel_problems(precision) == []


def test_model_checks_of_oft_and_freeze_read_the_models_config():
    oft, freeze = METHODS["oft"], METHODS["freeze"]
    assert oft.model_problems(spec_for("oft", block_size=32), TEXT) == []  # 576 and 1536 are multiples of 32
    problem = oft.model_problems(spec_for("oft", block_size=40), TEXT)[0]
    assert problem.field == "method.block_size" and "hidden_size 576" in problem.message
    assert freeze.model_problems(spec_for("freeze", last_blocks=30), TEXT) == []
    assert freeze.model_problems(spec_for("freeze", last_blocks=31), TEXT)[0].field == "method.last_blocks"


@pytest.mark.parametrize("name", ["prompt_tuning", "prefix_tuning", "p_tuning"])
def test_prompt_methods_refuse_packing_and_too_many_virtual_tokens(name):
    m = METHODS[name]
    spec = RunSpec(model="builtin:smollm2-135m-instruct", data={"path": "x.jsonl"},
                   method={"name": name, "num_virtual_tokens": 300}, train={"cutoff_len": 512, "packing": True})
    assert {p.field for p in m.validate(spec, 10)} == {"method.num_virtual_tokens", "train.packing"}
    assert not m.merges and not m.vision and not m.padding_free


def test_full_fine_tuning_keeps_a_tied_embedding_frozen_and_trains_an_untied_one():
    full = METHODS["full"]
    tied = full.build_peft_config(spec_for("full"), TEXT, 10).target_modules
    untied_facts = ModelFacts(kind="text", model_type="llama", config={**SMOLLM2_CONFIG, "tie_word_embeddings": False})
    untied = full.build_peft_config(spec_for("full"), untied_facts, 10).target_modules
    assert not re.fullmatch(tied, "model.embed_tokens") and re.fullmatch(untied, "model.embed_tokens")
    assert re.fullmatch(tied, "model.layers.29") and re.fullmatch(tied, "model.norm")
    assert not re.fullmatch(tied, "model.layers.29.self_attn") and not re.fullmatch(untied, "model.visual.blocks.0")


def test_boft_checks_its_block_span_against_the_models_layer_widths():
    """peft needs block_size x 2^(factor-1) to divide every adapted layer's input size; the check reads
    the sizes from config.json (attention: hidden 576; all-linear also intermediate 1536)."""
    boft = METHODS["boft"]
    assert boft.model_problems(spec_for("boft", block_size=8, butterfly_factor=2), TEXT) == []  # 576 = 16 x 36
    assert boft.model_problems(spec_for("boft", preset="wide"), TEXT) == []  # 8 x 2^3 = 64: 576 = 9 x 64
    problem = boft.model_problems(spec_for("boft", block_size=16, butterfly_factor=4), TEXT)[0]  # 128: 576 = 4.5 x 128
    assert problem.field == "method.block_size" and "= 128 does not divide" in problem.message \
        and "hidden_size 576" in problem.message and "choose a block size" in problem.hint
    wide = spec_for("boft", block_size=16, butterfly_factor=1, targets={"mode": "all-linear"})
    assert boft.model_problems(wide, TEXT) == []
    bad = boft.model_problems(spec_for("boft", block_size=5, butterfly_factor=2), TEXT)
    assert {p.field for p in bad} == {"method.block_size"} and "odd" in bad[0].message
    cfg = boft.build_peft_config(spec_for("boft"), TEXT, 10)
    assert (cfg.boft_block_size, cfg.boft_block_num, cfg.boft_n_butterfly_factor) == (8, 0, 2)
    assert boft.merges and not boft.vision


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for workers without CUDA")
def test_boft_is_refused_on_cpu_where_peft_would_silently_train_oft():
    problems = METHODS["boft"].device_problems(spec_for("boft"))
    assert [p.field for p in problems] == ["method.name"] and "fbd_cuda" in problems[0].message
    assert "OFT" in problems[0].hint


def test_loftq_is_a_4_bit_qlora_start_with_scaling_one():
    """LoftQ starts the adapter from the 4-bit quantisation error: QLoRA 4-bit only, alpha = r (peft sets
    B x A to the error itself); LoRA (unquantised base) and 8-bit QLoRA refuse it with the reason."""
    qlora, lora = METHODS["qlora"], METHODS["lora"]
    assert qlora.validate(spec_for("qlora", preset="loftq"), 100) == []
    cfg = qlora.build_peft_config(spec_for("qlora", preset="loftq"), TEXT, 100)
    assert cfg.init_lora_weights is True and cfg.r == cfg.lora_alpha  # peft's replacement runs at train begin
    assert "QLoRA" in lora.validate(spec_for("lora", init="loftq", r=16, alpha=16), 100)[0].hint
    assert [p.field for p in qlora.validate(spec_for("qlora", init="loftq", bits=8, r=16, alpha=16), 100)] \
        == ["method.init"]
    assert [p.field for p in qlora.validate(spec_for("qlora", init="loftq", r=16, alpha=32), 100)] == ["method.alpha"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for workers without CUDA")
def test_loftq_is_refused_on_cpu_with_peft_s_reason():
    """peft 0.21.2 computes LoftQ on "cuda" (hard-coded); the pre-flight runs it once on a small weight."""
    problems = METHODS["qlora"].device_problems(spec_for("qlora", preset="loftq"))
    assert [p.field for p in problems] == ["method.init"] and "CUDA" in problems[0].message
    assert METHODS["qlora"].device_problems(spec_for("qlora")) == []  # the default start trains here
