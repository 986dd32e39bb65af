"""The table of input formats. Detection tries them in this order (most specific first); tests
loop over the table. Each module has the shape described in ``base``."""
from __future__ import annotations

from studio.datasets.formats import (alpaca, alpaca_ranking, caption, hh_rlhf, image_folder, kto, llava, messages,
                                     preference, sharegpt, sharegpt_preference)
from studio.datasets.formats.base import Context, Format

# preference forms first: their rows also carry the fields of an instruction format
# (UltraFeedback-binarized has `messages` beside prompt/chosen/rejected)
FORMATS: dict[str, Format] = {m.NAME: m for m in (sharegpt_preference, alpaca_ranking, preference, hh_rlhf, kto,
                                                   messages, llava, sharegpt, alpaca, caption, image_folder)}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)


def detect_format(keys: set[str]) -> str | None:
    """The first format whose fields are present, or ``None``."""
    return next((name for name, fmt in FORMATS.items() if fmt.detect(keys)), None)


def format_kind(name: str) -> str:
    """``sft``, ``preference`` or ``kto``: the kind of rows a format gives."""
    return getattr(FORMATS[name], "KIND", "sft")


def describe_formats() -> str:
    return "; ".join(f"{name} ({', '.join(fmt.FIELDS)})" for name, fmt in FORMATS.items())


__all__ = ["FORMATS", "FORMAT_NAMES", "Context", "Format", "detect_format", "describe_formats", "format_kind"]
