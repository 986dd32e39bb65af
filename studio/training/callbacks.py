"""Trainer callbacks: live metrics, cancellation, complete checkpoints, AdaLoRA's rank allocator."""
from __future__ import annotations

import math
import time
from typing import Any

from transformers import TrainerCallback

from studio.training import checkpoints
from studio.training.device import peak_memory_bytes
from studio.training.reporting import Reporter


def _dist_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _agree_on_cancel(local: bool) -> bool:
    """All ranks must stop at the same step or DDP hangs in the next all-reduce: rank 0 decides."""
    if not _dist_ready():
        return local
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1 if local else 0], dtype=torch.int32)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


class ProgressCallback(TrainerCallback):
    """Writes a metrics row at every logging step, checks for cancellation after every step, and
    marks checkpoints complete once the Trainer has finished writing them."""

    def __init__(self, reporter: Reporter, checkpoints_dir, keep_checkpoints: int):
        self.reporter = reporter
        self.checkpoints_dir = checkpoints_dir
        self.keep = keep_checkpoints
        self.first_step = 0  # > 0 when resuming: speed and ETA count from here
        self.cancelled = False
        self._t0 = self._t_last = time.monotonic()
        self._tokens_last = self.tokens_at_start = 0

    # -- progress -------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = self._t_last = time.monotonic()
        # After a resume the state already counts the earlier steps and tokens.
        self._tokens_last = self.tokens_at_start = state.num_input_tokens_seen or 0
        self.first_step = state.global_step
        if state.is_world_process_zero:
            where = f" (resumed at step {state.global_step})" if state.global_step else ""
            self.reporter.stage("train", f"training: {state.max_steps} steps{where}", fraction=0.0,
                                step=state.global_step, total_steps=state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The end-of-training summary (train_runtime, train_loss...) is not a step: metrics.json has it.
        if not state.is_world_process_zero or not logs or ("loss" not in logs and "eval_loss" not in logs):
            return
        now = time.monotonic()
        tokens = state.num_input_tokens_seen or 0
        dt = max(now - self._t_last, 1e-9)
        done = state.global_step - self.first_step
        eta = (now - self._t0) / done * (state.max_steps - state.global_step) if done > 0 else None
        is_train_log = "loss" in logs
        row = dict(step=state.global_step, total_steps=state.max_steps, epoch=logs.get("epoch", state.epoch),
                   loss=logs.get("loss"), eval_loss=logs.get("eval_loss"), learning_rate=logs.get("learning_rate"),
                   grad_norm=_finite(logs.get("grad_norm")), peak_memory_bytes=peak_memory_bytes(), eta_s=eta,
                   # num_input_tokens_seen is already summed over all processes
                   tokens_per_s=(tokens - self._tokens_last) / dt if is_train_log else None,
                   **preference_metrics(logs))
        if is_train_log:
            self._t_last, self._tokens_last = now, tokens
        self.reporter.metric(stage="train" if is_train_log else "eval", **row)
        self.reporter.stage("train", _sentence(row), fraction=state.global_step / max(1, state.max_steps),
                            step=state.global_step, total_steps=state.max_steps)

    # -- cancel ---------------------------------------------------------------------------------
    def on_step_end(self, args, state, control, **kwargs):
        local = self.reporter.cancelled() if state.is_world_process_zero else False
        if _agree_on_cancel(local) and state.global_step < state.max_steps:  # at the last step: just finish
            self.cancelled = True
            control.should_training_stop = True
            control.should_save = True  # a LoRA checkpoint takes a second: keep the work done so far
        return control

    # -- checkpoints ----------------------------------------------------------------------------
    def on_save(self, args, state, control, **kwargs):
        if _dist_ready():
            import torch.distributed as dist

            dist.barrier()  # every rank has written its part (RNG state) before the marker
        if state.is_world_process_zero:
            folder = self.checkpoints_dir / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                checkpoints.mark_complete(folder, state.global_step)
                checkpoints.prune(self.checkpoints_dir, self.keep)


class FirstStepTimer(TrainerCallback):
    """Seconds from ``t_start`` to the end of the first optimizer step: what a user waits before
    the first loss appears (preparing, tokenising, loading, the first step itself)."""

    def __init__(self, t_start: float):
        self.t_start, self.seconds = t_start, None

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds is None:
            self.seconds = time.monotonic() - self.t_start


class AdaLoraAllocatorCallback(TrainerCallback):
    """Calls ``update_and_allocate`` after each optimizer step, while gradients still exist (the
    Trainer clears them right after ``on_optimizer_step``). Without it AdaLoRA never prunes."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        peft_model = _unwrap(model)
        peft_model.base_model.update_and_allocate(state.global_step)


def _unwrap(model: Any) -> Any:
    while hasattr(model, "module") and not hasattr(model, "base_model"):
        model = model.module  # DDP
    return model


# TRL's preference log keys (DPO, KTO, reward) -> the studio's metric names
PREFERENCE_METRICS = {"rewards/margins": "reward_margin", "margin": "reward_margin",
                      "rewards/accuracies": "reward_accuracy", "accuracy": "reward_accuracy",
                      "logps/chosen": "logps_chosen", "logps/rejected": "logps_rejected"}


def preference_metrics(logs: dict[str, Any]) -> dict[str, float]:
    """Reward margin and accuracy, chosen/rejected log-probs from a DPO/KTO/reward log (train or eval)."""
    out = {}
    for key, value in logs.items():
        name = PREFERENCE_METRICS.get(key.removeprefix("eval_"))
        if name is not None and _finite(value) is not None:
            out[name] = float(value)
    return out


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _sentence(row: dict[str, Any]) -> str:
    parts = [f"step {row['step']}/{row['total_steps']}"]
    if row.get("loss") is not None:
        parts.append(f"loss {row['loss']:.4f}")
    if row.get("eval_loss") is not None:
        parts.append(f"eval loss {row['eval_loss']:.4f}")
    if row.get("reward_accuracy") is not None:
        parts.append(f"reward accuracy {row['reward_accuracy']:.0%}")
    if row.get("reward_margin") is not None:
        parts.append(f"margin {row['reward_margin']:.3f}")
    if row.get("tokens_per_s"):
        parts.append(f"{row['tokens_per_s']:.0f} tokens/s")
    if row.get("eta_s") is not None:
        parts.append(f"about {row['eta_s'] / 60:.1f} min left")
    return ", ".join(parts)
