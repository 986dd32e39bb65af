"""The table of input formats. Detection tries them in this order (most specific first); tests
loop over the table. Each module has the shape described in ``base``."""
from __future__ import annotations

from studio.datasets.formats import alpaca, caption, image_folder, llava, messages, sharegpt
from studio.datasets.formats.base import Context, Format

FORMATS: dict[str, Format] = {m.NAME: m for m in (messages, llava, sharegpt, alpaca, caption, image_folder)}
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)


def detect_format(keys: set[str]) -> str | None:
    """The first format whose fields are present, or ``None``."""
    return next((name for name, fmt in FORMATS.items() if fmt.detect(keys)), None)


def describe_formats() -> str:
    return "; ".join(f"{name} ({', '.join(fmt.FIELDS)})" for name, fmt in FORMATS.items())


__all__ = ["FORMATS", "FORMAT_NAMES", "Context", "Format", "detect_format", "describe_formats"]
