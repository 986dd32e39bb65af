"""Sampling settings shared by every pane of a chat, and the limits a request must respect.

Plain pydantic, no torch: the UI validates a form with it before anything is queued, the worker
turns it into a ``GenerationConfig``. Every pane of a side-by-side chat uses the SAME settings and
seed, so a difference between panes comes from the adapter and nothing else.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from studio.spec import VisionSettings

MAX_ADAPTERS = 3  # panes beside the base model; more would not fit a screen side by side
MAX_IMAGES_PER_MESSAGE = 8

# Same bounds as training's defaults (studio.spec.VisionSettings): an image costs the
# same number of tokens in chat as it did while the adapter learned.
DEFAULT_MIN_PIXELS = VisionSettings.model_fields["min_pixels"].default
DEFAULT_MAX_PIXELS = VisionSettings.model_fields["max_pixels"].default


class ChatSettings(BaseModel):
    """What every pane generates with. ``temperature`` 0 means greedy decoding (reproducible)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    system_prompt: str = Field("", max_length=20_000, description="empty: the model's own default, if any")
    max_new_tokens: int = Field(256, ge=1, le=32_768)
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="0 = greedy (always the likeliest token)")
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    top_k: int = Field(50, ge=0, le=10_000, description="0 = no top-k filter")
    repetition_penalty: float = Field(1.1, ge=0.5, le=3.0, description="1.0 = off")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    min_pixels: int = Field(DEFAULT_MIN_PIXELS, ge=28 * 28, description="Qwen2.5-VL: smallest image size")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=28 * 28, description="Qwen2.5-VL: largest image size")

    @model_validator(mode="after")
    def _pixel_bounds(self) -> "ChatSettings":
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} is larger than max_pixels {self.max_pixels}")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def for_compare(cls, **overrides: Any) -> "ChatSettings":
        """Batch comparisons default to greedy and no repetition penalty: the answers are reproducible
        and the table shows what the adapter changed, not what the dice did."""
        return cls(**{"temperature": 0.0, "repetition_penalty": 1.0, **overrides})


class SettingsError(ValueError):
    """Every problem with a settings form, in one message."""


def parse_settings(data: ChatSettings | dict[str, Any] | None, *, compare: bool = False) -> ChatSettings:
    """Validate a settings dict (from the UI or the database) and report all problems at once."""
    if isinstance(data, ChatSettings):
        return data
    try:
        return ChatSettings.for_compare(**(data or {})) if compare else ChatSettings(**(data or {}))
    except ValidationError as e:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in e.errors()]
        raise SettingsError("invalid chat settings: " + "; ".join(problems)) from None
