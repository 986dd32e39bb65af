"""Fixtures for export tests: real adapters on the real built-in models, and workspaces with rows.

Adapters are made with peft (``init_lora_weights=False`` and scaled so they change the outputs
without destroying the model), once per session. The QLoRA adapter is created on a bitsandbytes
4-bit load of SmolLM2, as QLoRA training does; the export must merge it into a full-precision reload.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from storage.db import Database
from storage.settings import Settings

TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Language-model projections and the vision tower's attention, so the image path is merged too.
VL_TARGETS = (r".*(language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
              r"|visual\.blocks\.\d+\.attn\.(qkv|proj))")


def _scale_adapter(model, factor: float) -> None:
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name or "lora_E" in name:
                param.mul_(factor)


def _make_lora(base: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TEXT_TARGETS,
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    _scale_adapter(peft_model, 0.1)
    peft_model.save_pretrained(out)
    return out


def _make_adalora(base: Path, out: Path) -> Path:
    import torch
    from peft import AdaLoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(2)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = AdaLoraConfig(init_r=8, target_r=4, total_step=100, lora_alpha=16, target_modules=TEXT_TARGETS,
                           init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    _scale_adapter(peft_model, 0.01)  # E (the singular values) starts large without training
    peft_model.save_pretrained(out)
    return out


def _make_qlora(base: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    torch.manual_seed(3)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                               llm_int8_skip_modules=["lm_head"])
    model = AutoModelForCausalLM.from_pretrained(base, quantization_config=quant)
    assert getattr(model, "is_loaded_in_4bit", False), "the QLoRA base must really be 4-bit"
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TEXT_TARGETS,
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    _scale_adapter(peft_model, 0.1)
    peft_model.save_pretrained(out)
    return out


def _make_vl_lora(base: Path, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(4)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=VL_TARGETS,
                                                  init_lora_weights=False))
    assert any("visual" in n and "lora_A" in n for n, _ in peft_model.named_parameters())
    peft_model.save_pretrained(out)
    return out


MAKERS = {"lora": _make_lora, "adalora": _make_adalora, "qlora": _make_qlora, "vl_lora": _make_vl_lora}


@pytest.fixture(scope="session")
def made_adapters(tmp_path_factory, smollm2_path, tiny_vl_path) -> dict[str, Path]:
    """name -> adapter folder; made lazily, once per session (QLoRA's 4-bit load is the slow one)."""
    root = tmp_path_factory.mktemp("adapters")

    class Lazy(dict):
        def __missing__(self, name: str) -> Path:
            base = tiny_vl_path if name.startswith("vl") else smollm2_path
            self[name] = MAKERS[name](base, root / name)
            return self[name]

    return Lazy()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On 2 cores shared with other processes, OpenMP threads spin-waiting for each other make
    small-model inference 5-8x slower (measured: 8-token generation 4.7 s with 2 threads, 0.6 s
    with 1). Restored after each module, so other tests keep their setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def module_db(tmp_path_factory, model_cache):
    """One workspace + database shared by a module's tests (exports are slow to build on a CPU)."""
    settings = Settings.resolve(tmp_path_factory.mktemp("export-ws") / "workspace")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTS_WORKSPACE", str(settings.workspace))
        mp.setenv("FTS_DB_URL", settings.db_url)
        db = Database(settings)
        yield db
        db.dispose()
