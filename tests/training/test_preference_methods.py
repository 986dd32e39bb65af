"""DPO on methods of the table beyond LoRA (one step each on SmolLM2): a quantized base, AdaLoRA's
allocator, IA3, virtual tokens, and full fine-tuning (trainable copies of the blocks, so the
reference is still the adapter-disabled base)."""
from __future__ import annotations

import json
import math

import pytest

from studio.spec import RunSpec
from studio.training.recipe import train
from studio.training.reporting import NullReporter

pytestmark = pytest.mark.slow


@pytest.fixture
def pairs_dir(tmp_path):
    rows = [{"kind": "preference", "messages": [{"role": "user", "content": [{"type": "text", "text": f"Do you like {t}?"}]}],
             "chosen": [{"role": "assistant", "content": [{"type": "text", "text": f"Yes, I love {t}!"}]}],
             "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "No."}]}]}
            for t in ("tea", "rain", "music", "bread")]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("method", ["qlora", "adalora", "ia3", "prompt_tuning", "full"])
def test_dpo_step_on_each_kind_of_method(method, pairs_dir, smollm2):
    spec = RunSpec.model_validate({
        "model": smollm2, "data": {"path": str(pairs_dir)}, "method": method, "stage": "dpo",
        "train": {"max_steps": 1, "batch_size": 2, "grad_accum": 1, "cutoff_len": 64, "gradient_checkpointing": False,
                  "logging_steps": 1, "save_steps": 50, "warmup_ratio": 0.0, "lr_scheduler": "constant"}})
    reporter = NullReporter()
    result = train(spec, pairs_dir / "run", reporter)
    assert result.status == "completed" and math.isfinite(result.final_loss)
    assert any(m.get("reward_accuracy") is not None for m in reporter.metrics)
    assert any((pairs_dir / "run" / "adapter").iterdir())
    # full fine-tuning here is peft's LN-tuning of whole blocks: the reference is still the adapter-disabled base
    assert result.speed["reference"].startswith("the base model with the adapter disabled")
