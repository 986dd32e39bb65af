"""What the studio decides for speed before training, torch-free (the Train tab shows the same):
gradient checkpointing ``auto`` from the memory estimate, padding-free batches for text models."""
from __future__ import annotations

import pytest

from studio import estimate as est
from studio.planning import (choose_gradient_checkpointing, estimate_request, padding_free_applies, plan_memory,
                             token_lengths)
from studio.spec import RunSpec

QWEN_7B = "Qwen/Qwen2.5-7B-Instruct"  # configs from the estimator's bundled table: no files, no network
QWEN_VL = "Qwen/Qwen2.5-VL-7B-Instruct"


def spec(model: str = QWEN_7B, **train) -> RunSpec:
    return RunSpec(model=model, data={"path": "rows.jsonl"}, method={"name": "lora", "r": 16},
                   train={"batch_size": 4, "cutoff_len": 2048, **train})


def test_defaults_and_yaml_booleans_stay_valid():
    assert spec().train.gradient_checkpointing == "auto"
    assert spec().train.padding_free is True
    for text, value in (("true", True), ("false", False), ("auto", "auto")):
        parsed = RunSpec.from_yaml(f"model: m\ndata: {{path: a}}\ntrain: {{gradient_checkpointing: {text}}}")
        assert parsed.train.gradient_checkpointing == value
    with pytest.raises(ValueError):
        RunSpec.from_yaml("model: m\ndata: {path: a}\ntrain: {gradient_checkpointing: sometimes}")


def test_explicit_setting_is_kept_whatever_the_memory():
    for value in (True, False):
        choice = choose_gradient_checkpointing(spec(gradient_checkpointing=value), capacity_bytes=1, on_gpu=True)
        assert choice.enabled is value and choice.requested is value and "set in the spec" in choice.reason


def test_auto_is_off_when_the_run_fits_with_margin():
    choice = choose_gradient_checkpointing(spec(), capacity_bytes=1000 * est.GIB, on_gpu=True)
    assert choice.enabled is False and choice.requested == "auto"
    assert choice.without_bytes > choice.with_bytes  # checkpointing would have saved memory...
    assert choice.without_bytes < 1000 * est.GIB  # ...that is not needed
    assert choice.reason.startswith("off:") and "GPU memory" in choice.reason


def test_auto_is_on_when_only_checkpointing_makes_it_fit():
    fits_only_with = choose_gradient_checkpointing(spec(), capacity_bytes=1000 * est.GIB, on_gpu=True)
    between = (fits_only_with.with_bytes * 1.3 + fits_only_with.without_bytes) // 2
    assert fits_only_with.with_bytes * 1.2 < between < fits_only_with.without_bytes  # a card in between
    choice = choose_gradient_checkpointing(spec(), capacity_bytes=int(between), on_gpu=True)
    assert choice.enabled is True and choice.reason.startswith("on:")


def test_auto_on_cpu_compares_the_parts_that_live_in_ram():
    cpu = choose_gradient_checkpointing(spec(), capacity_bytes=1000 * est.GIB, on_gpu=False)
    request = estimate_request(spec(), est.lookup_config(QWEN_7B), gradient_checkpointing=False, on_gpu=False)
    assert cpu.without_bytes == est.estimate_cpu_training(request).total_bytes  # no CUDA context, no allocator
    assert request.trainer == "hf"  # on CPU the trainer computes plain logits (at labelled positions)
    assert "available RAM" in cpu.reason


def test_auto_follows_the_data_when_rows_are_short():
    """The real batches decide: short rows fit where the cut-off's worst case would not."""
    at_cutoff = choose_gradient_checkpointing(spec(), capacity_bytes=1000 * est.GIB, on_gpu=True)
    short = token_lengths([120, 80, 200, 150, 90, 60])
    with_data = choose_gradient_checkpointing(spec(), capacity_bytes=1000 * est.GIB, on_gpu=True, data=short)
    assert with_data.without_bytes < at_cutoff.without_bytes
    capacity = int((with_data.without_bytes + at_cutoff.without_bytes) / 2)
    assert choose_gradient_checkpointing(spec(), capacity, on_gpu=True).enabled is True
    assert choose_gradient_checkpointing(spec(), capacity, on_gpu=True, data=short).enabled is False


def test_no_estimate_means_on():
    choice = choose_gradient_checkpointing(spec(), 1000 * est.GIB, on_gpu=True, config={"model_type": "nonsense"})
    assert choice.enabled is True and "no memory estimate" in choice.reason


def test_memory_plan_follows_what_auto_chose():
    small, big = plan_memory(spec(), 24 * est.GIB), plan_memory(spec(), 141 * est.GIB)
    assert small.checkpointing.enabled is True and small.request.gradient_checkpointing is True
    assert big.checkpointing.enabled is False and big.request.gradient_checkpointing is False
    assert big.estimate.total_bytes == big.checkpointing.without_bytes


def test_token_lengths_are_exact():
    lengths = [5, 300, 7, 300, 42, 299]
    tl = token_lengths(lengths)
    assert tl.longest_rows(3, cutoff=1000) == [300, 300, 299]
    assert tl.batch_tokens(2, 1000, padding_free=True, packing=False) == (1, 600)
    assert tl.batch_tokens(2, 1000, padding_free=False, packing=False) == (2, 300)


def test_padding_free_for_text_models_only():
    config = est.lookup_config(QWEN_7B)
    assert padding_free_applies(spec(), config)[0] is True
    assert padding_free_applies(spec(padding_free=False), config)[0] is False
    on, why = padding_free_applies(spec(QWEN_VL), est.lookup_config(QWEN_VL))
    assert on is False and "rope" in why
    assert estimate_request(spec(), config).padding_free is True
    assert estimate_request(spec(QWEN_VL), est.lookup_config(QWEN_VL)).padding_free is False


def test_prompt_learning_methods_stay_padded():
    """Virtual tokens go before each row: a joined row would give them to its first row only."""
    config = est.lookup_config(QWEN_7B)
    for method in ("prompt_tuning", "p_tuning", "prefix_tuning"):
        prompt_spec = RunSpec(model=QWEN_7B, data={"path": "rows.jsonl"}, method=method)
        on, why = padding_free_applies(prompt_spec, config)
        assert on is False and "virtual tokens" in why
