"""Token-length statistics of canonical rows, with image tokens counted the way the model will.

A vision-language processor turns each image placeholder into many tokens (Qwen2.5-VL: an image
smart-resized to h x w, multiples of 28, becomes (h/28)*(w/28) ``<|image_pad|>`` tokens). A row
cut at the cut-off length *inside* that run makes training fail with "image features and image
tokens do not match", so such rows are flagged, not just counted as long.

The tokenizer/processor is passed in as a loaded object: any model works, nothing is downloaded.
"""
from __future__ import annotations

import json

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from PIL import Image

from studio.datasets.render import render_row

ImageTokenCounter = Callable[[int, int], int]  # (height, width) -> tokens
MAX_LISTED_ROWS = 100
BATCH = 256


@dataclass
class DatasetStats:
    rows: int = 0
    turns: int = 0
    images: int = 0
    image_tokens: int = 0
    image_tokens_exact: bool = True
    cutoff_len: int = 0
    min_tokens: int = 0
    max_tokens: int = 0
    mean_tokens: float = 0.0
    median_tokens: int = 0
    p95_tokens: int = 0
    histogram: dict[str, list] = field(default_factory=lambda: {"edges": [], "counts": []})
    rows_over_cutoff: int = 0
    rows_cut_inside_image: int = 0
    rows_image_after_cutoff: int = 0
    cut_inside_image_rows: list[int] = field(default_factory=list)  # 0-based row indexes (first 100)
    over_cutoff_rows: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QwenImageTokens:
    """Qwen2-VL / Qwen2.5-VL rule: smart-resize to multiples of ``patch*merge`` within
    [min_pixels, max_pixels]; one token per merged patch."""

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    merge_size: int = 2

    def __call__(self, height: int, width: int) -> int:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        factor = self.patch_size * self.merge_size
        h, w = smart_resize(height, width, factor=factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return (h // factor) * (w // factor)


def image_token_counter(processor: Any, min_pixels: int | None = None,
                        max_pixels: int | None = None) -> ImageTokenCounter | None:
    """The processor's own rule for tokens per image, at the chosen pixel bounds (``None``: the
    object has no image processor, e.g. a plain tokenizer)."""
    ip = getattr(processor, "image_processor", None)
    if ip is not None and hasattr(ip, "get_number_of_image_patches") and hasattr(ip, "merge_size"):
        kwargs = {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
        merge = ip.merge_size ** 2
        return lambda h, w: ip.get_number_of_image_patches(h, w, dict(kwargs)) // merge
    if hasattr(processor, "_get_num_multimodal_tokens"):
        return lambda h, w: int(processor._get_num_multimodal_tokens(image_sizes=[(h, w)]).num_image_tokens[0])
    return None


def compute_statistics(rows: Iterable[dict[str, Any]], processor: Any, *, cutoff_len: int = 2048,
                       min_pixels: int | None = None, max_pixels: int | None = None,
                       image_token: str | None = None, image_tokens: ImageTokenCounter | None = None,
                       bins: int = 20, limit: int | None = None) -> DatasetStats:
    """Statistics over canonical rows (image parts holding paths that can be opened).

    ``processor``: a tokenizer, or a processor with ``.tokenizer`` (and ``.image_processor``).
    ``image_token``: the token a template emits per image (default: ``processor.image_token``).
    ``image_tokens``: override of tokens-per-image, e.g. ``QwenImageTokens(max_pixels=...)``.
    """
    counter = _Counter(processor, cutoff_len, image_token,
                       image_tokens or image_token_counter(processor, min_pixels, max_pixels))
    batch: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        batch.append(row)
        if len(batch) >= BATCH:
            counter.add(batch)
            batch = []
    if batch:
        counter.add(batch)
    return counter.result(bins)


class _Counter:
    def __init__(self, processor: Any, cutoff_len: int, image_token: str | None, per_image: ImageTokenCounter | None):
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.cutoff_len = cutoff_len
        self.image_token = image_token or getattr(processor, "image_token", None) or "<|image_pad|>"
        known = self.image_token in self.tokenizer.get_vocab()
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token) if known else None
        self.per_image = per_image
        self.lengths: list[int] = []
        self.s = DatasetStats(cutoff_len=cutoff_len, image_tokens_exact=per_image is not None)
        self._sizes: dict[str, tuple[int, int]] = {}

    def add(self, rows: list[dict[str, Any]]) -> None:
        texts = [render(r, self.processor, self.image_token) for r in rows]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        for row, ids in zip(rows, encoded):
            self._add_row(row, ids)

    def _add_row(self, row: dict[str, Any], ids: list[int]) -> None:
        index = self.s.rows
        self.s.rows += 1
        self.s.turns += sum(1 for m in row["messages"] if m["role"] != "system")
        images = [p["image"] for m in row["messages"] for p in m["content"] if p.get("type") == "image"]
        self.s.images += len(images)
        spans, length = self._expand(ids, images)
        self.lengths.append(length)
        if length > self.cutoff_len:
            self.s.rows_over_cutoff += 1
            _note(self.s.over_cutoff_rows, index)
        if any(start < self.cutoff_len < end for start, end in spans):
            self.s.rows_cut_inside_image += 1
            _note(self.s.cut_inside_image_rows, index)
        elif any(start >= self.cutoff_len for start, _ in spans):
            self.s.rows_image_after_cutoff += 1

    def _expand(self, ids: list[int], images: list[str]) -> tuple[list[tuple[int, int]], int]:
        """Spans of each image's tokens after the processor expands its placeholder, and the row's
        full length."""
        positions = [i for i, t in enumerate(ids) if t == self.image_token_id]
        counts = [self._tokens(img) for img in images]
        self.s.image_tokens += sum(counts)
        spans, shift = [], 0
        for pos, n in zip(positions, counts):
            spans.append((pos + shift, pos + shift + n))
            shift += n - 1
        missing = sum(counts[len(positions):])  # the template did not place these images
        return spans, len(ids) + shift + missing

    def _tokens(self, image: str) -> int:
        if self.per_image is None:
            return 1
        if image not in self._sizes:
            self._sizes[image] = image_size(image)
        return self.per_image(*self._sizes[image])

    def result(self, bins: int) -> DatasetStats:
        s, lengths = self.s, sorted(self.lengths)
        if lengths:
            s.min_tokens, s.max_tokens = lengths[0], lengths[-1]
            s.mean_tokens = round(sum(lengths) / len(lengths), 2)
            s.median_tokens = lengths[len(lengths) // 2]
            s.p95_tokens = lengths[min(len(lengths) - 1, math.ceil(0.95 * len(lengths)) - 1)]
            s.histogram = histogram(lengths, bins)
        return s


def _note(rows: list[int], index: int) -> None:
    if len(rows) < MAX_LISTED_ROWS:
        rows.append(index)


def histogram(values: list[int], bins: int) -> dict[str, list]:
    """Equal-width bins from 0 to the maximum: ``edges`` has ``bins + 1`` entries."""
    top = max(values) if values else 0
    width = max(1, math.ceil((top + 1) / bins))
    edges = [i * width for i in range(bins + 1)]
    counts = [0] * bins
    for v in values:
        counts[min(v // width, bins - 1)] += 1
    return {"edges": edges, "counts": counts}


# -- rendering --------------------------------------------------------------------------------------
def longest_sequence(row: dict[str, Any]) -> dict[str, Any]:
    """What one training sequence of the row is: a preference pair trains prompt + chosen and
    prompt + rejected (measured by the longer answer's characters), a KTO row prompt + completion."""
    from studio.datasets.preference import BRANCHES, branch_messages, row_kind

    branches = BRANCHES.get(row_kind(row))
    if not branches:
        return row
    longest = max(branches, key=lambda b: len(json.dumps(row[b], ensure_ascii=False)))
    return {**row, "messages": branch_messages(row, longest)}


def render(row: dict[str, Any], processor: Any, image_token: str) -> str:
    """The training text of a row (``studio.datasets.render``: the renderer training uses). Rows
    with images keep the parts list vision templates expect; text-only rows get strings."""
    has_images = any(p.get("type") == "image" for m in row["messages"] for p in m["content"])
    row = longest_sequence(row)
    return render_row(processor, row, vision=has_images,
                      image_placeholder=f"<|vision_start|>{image_token}<|vision_end|>")


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the header only."""
    with Image.open(path) as im:
        return im.size[1], im.size[0]
