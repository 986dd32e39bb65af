"""TRL's SFTTrainer with the method's hooks: an extra loss term and extra checkpoint state.

1. A method may add a term to the loss (AdaLoRA's orthogonality penalty). peft adds that one to
   ``outputs.loss`` in its forward, but SFTTrainer 1.x computes the loss from per-token
   log-probabilities (its fused LM head) and ignores ``outputs.loss``: it is added here instead.
2. A method may need more than the Trainer's checkpoint to resume exactly (AdaLoRA's full-rank
   tensors and allocator statistics): ``save_state`` / ``restore_state`` of the method table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import SFTTrainer


class StudioSFTTrainer(SFTTrainer):
    method: Any = None  # studio.methods.Method of the run (set by the recipe)
    spec: Any = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        if self.method is None or self.method.extra_loss is None or not model.training:
            return result
        reg = self.method.extra_loss(model, self.spec)
        if reg is None:
            return result
        # The Trainer divides the loss by the accumulation steps unless it was already normalised
        # over the whole accumulated batch (num_items_in_batch); the penalty must count once per step.
        scaled = self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None else (
            (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None)
        reg = reg / (self.current_gradient_accumulation_steps if scaled else 1)
        if return_outputs:
            loss, outputs = result
            return loss + reg.to(loss.dtype), outputs
        return result + reg.to(result.dtype)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.method is not None and self.method.save_state is not None and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            self.method.save_state(self.model, folder)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        restore = self.method.restore_state if self.method is not None else None
        if restore is not None and restore(self.model, Path(resume_from_checkpoint)):
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)
