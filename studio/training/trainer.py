"""TRL's SFTTrainer with what it lacks for AdaLoRA: its regulariser and resumable checkpoints.

1. peft adds AdaLoRA's orthogonality penalty to ``outputs.loss`` in its forward, but SFTTrainer 1.x
   computes the loss from per-token log-probabilities (its fused LM head) and ignores
   ``outputs.loss``: without ``compute_loss`` below the penalty silently disappears.
2. peft saves an AdaLoRA adapter already cut down to its current ranks, and loading it resizes the
   layers; a checkpoint saved that way cannot be resumed (the full-rank model and its optimizer
   state no longer match). Checkpoints therefore also hold the full-rank trainable tensors, the
   rank pattern and the allocator's importance statistics, and resuming restores exactly those.
"""
from __future__ import annotations

from pathlib import Path

import torch
from trl import SFTTrainer

from studio.training.callbacks import adalora_orth_regulariser

ADALORA_STATE = "adalora_state.safetensors"  # tensors; the rank pattern goes in its metadata


class StudioSFTTrainer(SFTTrainer):
    orth_reg_weight: float = 0.0
    is_adalora: bool = False

    # -- AdaLoRA's regulariser ------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if not (self.orth_reg_weight and model.training):
            return result
        reg = adalora_orth_regulariser(model)
        if reg is None:
            return result
        # The Trainer divides the loss by the accumulation steps unless it was already normalised
        # over the whole accumulated batch (num_items_in_batch); the penalty must count once per step.
        scaled = self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None else (
            (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None)
        reg = self.orth_reg_weight * reg / (self.current_gradient_accumulation_steps if scaled else 1)
        if return_outputs:
            loss, outputs = result
            return loss + reg.to(loss.dtype), outputs
        return result + reg.to(result.dtype)

    # -- AdaLoRA's checkpoints ------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.is_adalora and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            save_adalora_state(self.model, folder / ADALORA_STATE)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        state_file = Path(resume_from_checkpoint) / ADALORA_STATE
        if self.is_adalora and state_file.exists():
            restore_adalora_state(self.model, load_adalora_state(state_file))
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)


def adalora_state(peft_model) -> dict:
    allocator = peft_model.base_model.rankallocator
    name = peft_model.base_model.trainable_adapter_name
    return {
        "params": {n: p.detach().cpu().clone() for n, p in peft_model.named_parameters() if p.requires_grad},
        "rank_pattern": peft_model.peft_config[name].rank_pattern,
        "allocator": {k: {n: t.detach().cpu().clone() for n, t in getattr(allocator, k).items()}
                      for k in ("ipt", "exp_avg_ipt", "exp_avg_unc")},
    }


def save_adalora_state(peft_model, path: Path) -> None:
    """Safetensors (no pickle): ``params/<name>`` and ``<allocator field>/<name>`` tensors, and the
    rank pattern as JSON metadata."""
    import json

    from safetensors.torch import save_file

    state = adalora_state(peft_model)
    tensors = {f"params/{n}": t for n, t in state["params"].items()}
    for field, values in state["allocator"].items():
        tensors.update({f"{field}/{n}": t.contiguous() for n, t in values.items()})
    save_file(tensors, str(path), metadata={"rank_pattern": json.dumps(state["rank_pattern"])})


def load_adalora_state(path: Path) -> dict:
    import json

    from safetensors import safe_open

    state: dict = {"params": {}, "allocator": {}}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        state["rank_pattern"] = json.loads(f.metadata()["rank_pattern"])
        for key in f.keys():
            group, _, name = key.partition("/")
            target = state["params"] if group == "params" else state["allocator"].setdefault(group, {})
            target[name] = f.get_tensor(key)
    return state


def restore_adalora_state(peft_model, state: dict) -> None:
    params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for n, value in state["params"].items():
            params[n].copy_(value.to(params[n].device, params[n].dtype))
    name = peft_model.base_model.trainable_adapter_name
    peft_model.peft_config[name].rank_pattern = state["rank_pattern"]
    allocator = peft_model.base_model.rankallocator
    device = next(iter(params.values())).device
    for k, values in state["allocator"].items():
        setattr(allocator, k, {n: t.to(device) for n, t in values.items()})
