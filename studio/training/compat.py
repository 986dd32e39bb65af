"""Names that moved between the transformers 5 releases the studio supports (5.17 on the GPU
machines, 5.2x here): one place that asks the installed version, so a recipe reads the same."""
from __future__ import annotations

from typing import Any


def checkpointing_args(enabled: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Gradient checkpointing under the name this transformers knows: ``activation_checkpointing``
    in 5.2x (the old name still works there, deprecated), ``gradient_checkpointing`` before (5.17
    has only that one, and every run would fail with a TypeError on the new name)."""
    from transformers import TrainingArguments

    name = "activation" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient"
    return {f"{name}_checkpointing": enabled, f"{name}_checkpointing_kwargs": kwargs}
