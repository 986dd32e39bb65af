"""Skipping peft's adapter-input cast under autocast changes nothing but the time: bit-identical
loss and gradients on the built-in SmolLM2 in bf16, with and without gradient checkpointing."""
from __future__ import annotations

import pytest
import torch

from studio.training.trainer import adapter_input_cast_only_without_autocast

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def smollm2_path():
    from studio.models import SMOLLM2, prepare

    return prepare(SMOLLM2)


def peft_model(path, config):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    model.config.use_cache = False
    model = get_peft_model(model, config)
    for name, p in model.named_parameters():  # B = 0 at init: make the adapter matter in the loss
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02) if "lora_B" in name else None
    return model


def loss_and_grads(model, batch, skip_cast: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if skip_cast:
            with adapter_input_cast_only_without_autocast(model, CPU):
                loss = model(**batch).loss
        else:
            loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def lora_model(smollm2_path):
    from peft import LoraConfig

    return peft_model(smollm2_path, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_lora_loss_and_gradients_are_bit_identical(lora_model, checkpointing):
    model = lora_model
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = torch.randint(0, 4000, (2, 48), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "labels": ids}
    casts = []
    layer = next(m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled"))
    hook = layer.register_forward_pre_hook(lambda m, a: casts.append(m.cast_input_dtype_enabled))
    try:
        base_loss, base_grads = loss_and_grads(model, batch, skip_cast=False)
        fast_loss, fast_grads = loss_and_grads(model, batch, skip_cast=True)
    finally:
        hook.remove()
        if checkpointing:
            model.gradient_checkpointing_disable()
    assert casts[0] is True and False in casts  # it did switch (for the second pass's forward)
    assert layer.cast_input_dtype_enabled is True  # and switched back
    assert torch.equal(base_loss, fast_loss)
    assert base_grads.keys() == fast_grads.keys()
    assert all(torch.equal(base_grads[k], fast_grads[k]) for k in base_grads)


def test_nothing_changes_without_autocast(lora_model):
    layer = next(m for m in lora_model.modules() if hasattr(m, "cast_input_dtype_enabled"))
    with adapter_input_cast_only_without_autocast(lora_model, CPU):
        assert layer.cast_input_dtype_enabled is True  # fp32 adapter beside bf16 weights needs the cast here


def test_ia3_without_the_flag_trains_under_it(smollm2_path):
    """peft's own helper raises on IA3's layers (they have no such flag); ours leaves them be."""
    from peft import IA3Config

    model = peft_model(smollm2_path, IA3Config(task_type="CAUSAL_LM"))
    model.train()
    ids = torch.randint(0, 4000, (1, 32), generator=torch.Generator().manual_seed(2))
    loss, grads = loss_and_grads(model, {"input_ids": ids, "labels": ids}, skip_cast=True)
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads.values())
