"""TRL's SFTTrainer with the method's hooks (an extra loss term, extra checkpoint state) and a
loss that computes only what training needs.

0. The loss. TRL 1.x's SFTTrainer computes the loss with its fused, chunked LM head and, every step,
   the entropy and top-1 accuracy over the whole vocabulary for its logs. Where Triton runs the fold
   (CUDA) that is one kernel and the logits never exist: it is kept. Elsewhere (CPU) TRL scores
   *every* position, prompt and padding included, folds each (tokens x 32768) tile with a dozen fp32
   torch ops, recomputes the projection in backward and does the backward GEMMs in fp32: measured on
   SmolLM2-135M it was the largest part of a step (bench/profile_training_step.py). There the loss is
   computed like transformers' own causal-LM loss, but only at the positions that have a label: the
   model projects just those hidden states (``logits_to_keep`` as a boolean mask), then fp32
   cross-entropy. Same value, same gradient, less than half the work on prompt-heavy chat data.
1. A method may add a term to the loss (AdaLoRA's orthogonality penalty). peft adds that one to
   ``outputs.loss`` in its forward, but SFTTrainer 1.x computes the loss from per-token
   log-probabilities (its fused LM head) and ignores ``outputs.loss``: it is added here instead.
   The logs keep the two apart: ``loss`` is the language-model loss (the run's curve) and
   ``extra_loss`` the method's term, averaged over the same steps (AdaLoRA's is ~2.4 at the start on
   small models, larger than the LM loss itself, and would hide it).
2. A method may need more than the Trainer's checkpoint to resume exactly (AdaLoRA's full-rank
   tensors and allocator statistics): ``save_state`` / ``restore_state`` of the method table.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from trl import SFTTrainer

IGNORE = -100


def fused_head_is_compact(device: torch.device) -> bool:
    """TRL's fused LM head only scores labelled positions, in one Triton kernel, on these devices."""
    from transformers.utils import is_triton_available

    return device.type in ("cuda", "xpu") and is_triton_available()


def labelled_logits_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> tuple[Any, Any]:
    """(loss, outputs): cross-entropy of the next-token prediction at every position whose next
    label is not -100, summed and divided by ``num_items_in_batch`` (the tokens of the whole
    accumulated batch, so accumulation weighs every token alike) or by this batch's count.
    Equal to transformers' ``ForCausalLMLoss`` (which upcasts the logits to fp32 too)."""
    labels = inputs["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE  # hidden state t predicts label t+1
    targets = labels[:, 1:][keep[:, :-1]]
    forward_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    outputs = model(**forward_inputs, logits_to_keep=keep, use_cache=False)
    logits = outputs.logits.reshape(-1, outputs.logits.size(-1))  # (labelled tokens, vocab)
    loss_sum = torch.nn.functional.cross_entropy(logits.float(), targets.to(logits.device), reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    return loss_sum / torch.as_tensor(count, device=loss_sum.device).clamp(min=1), outputs


def is_prompt_learning(model: Any) -> bool:
    """Prompt tuning, prefix tuning, P-tuning: peft adds virtual tokens instead of changing layers."""
    while hasattr(model, "module") and not hasattr(model, "active_peft_config"):
        model = model.module  # DDP
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))


class StudioSFTTrainer(SFTTrainer):
    method: Any = None  # studio.methods.Method of the run (set by the recipe)
    spec: Any = None
    trl_loss: bool | None = None  # None: TRL's fused head only where it is compact; True: always (benchmarks)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = self._loss(model, inputs, return_outputs, num_items_in_batch)
        if self.method is None or self.method.extra_loss is None or not model.training:
            return result
        reg = self.method.extra_loss(model, self.spec)
        if reg is None:
            return result
        # per micro-batch, as added below: the logged loss holds its mean over the logging window
        self._extra_sum = getattr(self, "_extra_sum", 0.0) + reg.detach().float()
        self._extra_count = getattr(self, "_extra_count", 0) + 1
        # The Trainer divides the loss by the accumulation steps unless it was already normalised
        # over the whole accumulated batch (num_items_in_batch); the penalty must count once per step.
        scaled = self.loss_is_scaled_for_ga if self.loss_is_scaled_for_ga is not None else (
            (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func is not None)
        reg = reg / (self.current_gradient_accumulation_steps if scaled else 1)
        if return_outputs:
            loss, outputs = result
            return loss + reg.to(loss.dtype), outputs
        return result + reg.to(result.dtype)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Split the method's extra term out of the logged training loss (see 1. above)."""
        count = getattr(self, "_extra_count", 0)
        if "loss" in logs and count:
            extra = float(self._extra_sum) / count
            logs["extra_loss"] = extra
            logs["loss"] = logs["loss"] - extra
            self._extra_sum, self._extra_count = 0.0, 0
        return super().log(logs, *args, **kwargs)

    def _loss(self, model, inputs, return_outputs, num_items_in_batch):
        use_trl = self.trl_loss if self.trl_loss is not None else fused_head_is_compact(self.args.device)
        use_trl = use_trl or is_prompt_learning(model)  # virtual tokens lengthen the sequence: TRL pads the labels
        if "labels" in inputs and is_prompt_learning(model):
            # peft prepends virtual tokens and pads the labels to match; neither the labelled-positions
            # mask below nor TRL's fused head knows about them: the model's own loss, per accumulated batch
            outputs = model(**inputs, num_items_in_batch=num_items_in_batch, use_cache=False)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        if "labels" not in inputs or use_trl:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        loss, outputs = labelled_logits_loss(model, inputs, num_items_in_batch)
        # Like Trainer.compute_loss: num_items_in_batch counts every rank's tokens, DDP averages gradients
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

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
