"""From canonical JSONL rows to what the trainer consumes, with loss on assistant turns only.

Canonical rows are ``{"messages": [{"role", "content": [{"type": "text"|"image", ...}]}]}``.

Assistant-only labels, for any chat template: render the conversation with the model's template,
then for each assistant turn render the prefix before it (with the generation prompt) and the
prefix including it; the tokens between the two lengths are that turn's answer, including its
end-of-turn token (so the model learns to stop). Everything else is labelled -100. This needs no
``{% generation %}`` markers in the template, so it works for SmolLM2's ChatML template, Qwen,
Llama 3 and the rest alike.

Text models: rows are tokenised up front into ``input_ids`` + ``labels`` (the SFTTrainer keeps
ready-made labels as they are). Vision-language models (Qwen2.5-VL): images are turned into pixels
on the fly by ``VisionCollator`` (too big to precompute); the up-front pass only measures each row
(text tokens + image tokens from the image size, exactly as the processor will resize it) and
drops rows whose image tokens would not fit in the cut-off: a cut never falls inside an image.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from studio.datasets.render import render as render_messages
from studio.datasets.render import template_messages  # noqa: F401  (also this module's public name)

IGNORE = -100


# -- reading rows ------------------------------------------------------------------------------------
@dataclass
class Rows:
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    eval_source: str  # "validation split" | "held out N%" | "none"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(_absolute_images(json.loads(line), path.parent))
    return rows


def _absolute_images(row: dict[str, Any], folder: Path) -> dict[str, Any]:
    for m in row.get("messages", []):
        if isinstance(m.get("content"), list):
            for part in m["content"]:
                if part.get("type") == "image" and not Path(part["image"]).is_absolute():
                    part["image"] = str(folder / part["image"])
    return row


def dataset_files(data: Any, db: Any) -> tuple[Path | None, Path | None]:
    """(train.jsonl, validation.jsonl or None) for a spec's data section; None where missing."""
    if data.dataset_id is not None:
        from studio.datasets.service import dataset_dir

        folder = dataset_dir(db, data.dataset_id)
    else:
        p = Path(data.path).expanduser()
        if p.is_file():
            return p, None
        folder = p
    train, val = folder / "train.jsonl", folder / "validation.jsonl"
    return (train if train.is_file() else None), (val if val.is_file() else None)


def _split(data: Any, db: Any, path: Path | None, split: str) -> list[dict[str, Any]]:
    if path is None:
        return []
    if data.dataset_id is not None:  # the datasets layer resolves image paths for its own rows
        from studio.datasets.service import read_canonical

        return list(read_canonical(db, data.dataset_id, split))
    return _read_jsonl(path)


def read_rows(data: Any, db: Any, seed: int) -> Rows:
    """Training and evaluation rows. Evaluation uses the dataset's validation split if it has one,
    else holds out ``eval_fraction`` of the training rows (seeded, so a resumed run holds out the
    same rows)."""
    train_path, val_path = dataset_files(data, db)
    if train_path is None:
        raise FileNotFoundError("the dataset has no train.jsonl")
    train = _split(data, db, train_path, "train")
    if val_path is not None:
        evaluation, source = _split(data, db, val_path, "validation"), "validation split"
    elif data.eval_fraction > 0 and len(train) > 1:
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        held = set(order[: max(1, round(len(train) * data.eval_fraction))])
        evaluation = [r for i, r in enumerate(train) if i in held]
        train = [r for i, r in enumerate(train) if i not in held]
        source = f"held out {data.eval_fraction:.0%} of the training rows"
    else:
        evaluation, source = [], "none"
    if data.max_rows:
        train = train[: data.max_rows]
    if data.max_eval_rows:
        evaluation = evaluation[: data.max_eval_rows]
    return Rows(train, evaluation, source)


def row_images(row: dict[str, Any]) -> list[str]:
    return [part["image"] for m in row.get("messages", []) if isinstance(m.get("content"), list)
            for part in m["content"] if part.get("type") == "image"]


# -- template form -------------------------------------------------------------------------------------
# -- assistant masks -----------------------------------------------------------------------------------
Render = Callable[[list[dict[str, Any]], bool], str]
Tokenize = Callable[[str], list[int]]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_with_assistant_mask(messages: list[dict[str, Any]], render: Render,
                               tokenize: Tokenize) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and a 0/1 mask, 1 on the assistant's tokens."""
    ids = tokenize(render(messages, False))
    mask = [0] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = _common_prefix(tokenize(render(messages[:i], True)), ids)
        end = _common_prefix(tokenize(render(messages[: i + 1], False)), ids)
        mask[start:end] = [1] * max(0, end - start)
    return ids, mask


def tokenizer_functions(template_owner: Any, tokenizer: Any, tools: list | None = None) -> tuple[Render, Tokenize]:
    """Render with the model's chat template (the processor's for VL) through the one renderer the
    statistics and chat use too, with the row's tool definitions; tokenize without adding special
    tokens (the template already wrote them; adding a BOS twice is a classic bug)."""
    def render(msgs: list[dict[str, Any]], generation_prompt: bool) -> str:
        return render_messages(template_owner, msgs, tools=tools, generation_prompt=generation_prompt)

    def tokenize(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    return render, tokenize


# -- text models ---------------------------------------------------------------------------------------
@dataclass
class EncodeStats:
    rows: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_no_answer: int = 0  # no assistant token left within the cut-off
    dropped_image_cut: int = 0  # the cut-off would fall inside an image
    tokens: int = 0
    longest: int = 0
    examples: list[str] = field(default_factory=list)

    def add_drop_example(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


Progress = Callable[[int], None]  # called with the number of rows done so far
PROGRESS_EVERY = 500


def encode_text_rows(rows: list[dict[str, Any]], tokenizer: Any, cutoff: int,
                     progress: Progress | None = None) -> tuple[dict[str, list], EncodeStats]:
    """Columns ``input_ids`` and ``labels`` (-100 outside assistant turns), cut at ``cutoff``."""
    plain = tokenizer_functions(tokenizer, tokenizer)
    stats, cols = EncodeStats(), {"input_ids": [], "labels": []}
    for n, row in enumerate(rows):
        if progress and n % PROGRESS_EVERY == 0:
            progress(n)
        stats.rows += 1
        # the row's tool definitions are part of its prompt (as in the statistics and chat)
        render, tokenize = tokenizer_functions(tokenizer, tokenizer, row["tools"]) if row.get("tools") else plain
        ids, mask = encode_with_assistant_mask(template_messages(row["messages"], vision=False), render, tokenize)
        stats.longest = max(stats.longest, len(ids))
        if len(ids) > cutoff:
            stats.truncated += 1
            ids, mask = ids[:cutoff], mask[:cutoff]
        if not any(mask):
            stats.dropped_no_answer += 1
            stats.add_drop_example(f"row {n + 1}: no answer token within the first {cutoff} tokens")
            continue
        cols["input_ids"].append(ids)
        cols["labels"].append([t if k else IGNORE for t, k in zip(ids, mask)])
        stats.kept += 1
        stats.tokens += len(ids)
    return cols, stats


# -- vision-language models ----------------------------------------------------------------------------
def image_token_count(path: str, min_pixels: int, max_pixels: int, factor: int = 28) -> int:
    """Tokens Qwen2.5-VL spends on one image (the statistics' rule, ``QwenImageTokens``: the
    processor's ``smart_resize`` to multiples of ``factor`` within the pixel bounds)."""
    from studio.datasets.stats import QwenImageTokens, image_size

    rule = QwenImageTokens(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=factor // 2, merge_size=2)
    return rule(*image_size(path))  # (height, width) from the header only


def _expand(values: list[int], ids: list[int], image_token_id: int, counts: list[int]) -> list[int]:
    """Repeat the value at each image placeholder as many times as the image has tokens."""
    out, k = [], 0
    for v, t in zip(values, ids):
        if t == image_token_id:
            out.extend([v] * counts[k])
            k += 1
        else:
            out.append(v)
    return out


class VisionEncoder:
    """Measures and encodes VL rows with the model's processor (Qwen2.5-VL)."""

    def __init__(self, processor: Any, vision: Any, cutoff: int):
        self.processor, self.cutoff = processor, cutoff
        self.tokenizer = processor.tokenizer
        ip = processor.image_processor
        # min/max pixels bound how many tokens each image costs; transformers 5 keeps them in `size`.
        ip.size = {"shortest_edge": vision.min_pixels, "longest_edge": vision.max_pixels}
        for attr, value in (("min_pixels", vision.min_pixels), ("max_pixels", vision.max_pixels)):
            if hasattr(ip, attr):
                setattr(ip, attr, value)
        self.min_pixels, self.max_pixels = vision.min_pixels, vision.max_pixels
        self.merge = int(getattr(ip, "merge_size", 2))
        self.factor = int(getattr(ip, "patch_size", 14)) * self.merge
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", "<|image_pad|>"))
        self.render, self.tokenize = tokenizer_functions(processor, self.tokenizer)

    def measure(self, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The row in trainer form (``messages`` JSON, ``images``, unexpanded ``mask``), or None
        and why it cannot be trained within the cut-off."""
        messages = template_messages(row["messages"], vision=True)
        images = row_images(row)
        ids, mask = encode_with_assistant_mask(messages, self.render, self.tokenize)
        counts = [image_token_count(p, self.min_pixels, self.max_pixels, self.factor) for p in images]
        if ids.count(self.image_token_id) != len(images):
            return None, f"{len(images)} images but {ids.count(self.image_token_id)} image placeholders"
        full_ids = _expand(ids, ids, self.image_token_id, counts)
        full_mask = _expand(mask, ids, self.image_token_id, counts)
        if images:
            last_image = max(i for i, t in enumerate(full_ids) if t == self.image_token_id)
            if last_image + 2 > self.cutoff:  # +1 for the image's vision_end token
                return None, (f"its images end at token {last_image + 2}, beyond the cut-off {self.cutoff}: "
                              f"raise cutoff_len or lower max_pixels")
        if not any(full_mask[: self.cutoff]):
            return None, f"no answer token within the first {self.cutoff} tokens"
        return {"messages": json.dumps(messages), "images": images, "mask": mask,
                "length": min(len(full_ids), self.cutoff), "truncated": len(full_ids) > self.cutoff}, ""

    def prepare(self, rows: list[dict[str, Any]], progress: Progress | None = None) -> tuple[dict[str, list], EncodeStats]:
        stats, cols = EncodeStats(), {"messages": [], "images": [], "mask": []}
        for n, row in enumerate(rows):
            if progress and n % PROGRESS_EVERY == 0:
                progress(n)
            stats.rows += 1
            item, why = self.measure(row)
            if item is None:
                if "images end" in why:
                    stats.dropped_image_cut += 1
                else:
                    stats.dropped_no_answer += 1
                stats.add_drop_example(f"row {n + 1}: {why}")
                continue
            stats.kept += 1
            stats.truncated += int(item["truncated"])
            stats.tokens += item["length"]
            stats.longest = max(stats.longest, item["length"])
            for k in cols:
                cols[k].append(item[k])
        return cols, stats

    def encode(self, example: dict[str, Any]) -> dict[str, Any]:
        """One row as model inputs (batch of one, not padded) with labels."""
        import torch
        from PIL import Image

        messages = json.loads(example["messages"])
        images = [Image.open(p).convert("RGB") for p in example["images"]]
        text = self.render(messages, False)
        out = self.processor(text=[text], images=images or None, return_tensors="pt", add_special_tokens=False)
        ids = out["input_ids"][0]
        counts = [int(t.prod()) // self.merge**2 for t in out["image_grid_thw"]] if images else []
        unexpanded = self.tokenize(text)
        mask = torch.tensor(_expand(list(example["mask"]), unexpanded, self.image_token_id, counts), dtype=torch.bool)
        if mask.numel() != ids.numel():
            raise ValueError(f"processor produced {ids.numel()} tokens, expected {mask.numel()}: the chat template "
                             "or the image token counting disagrees with the processor")
        labels = torch.where(mask, ids, torch.full_like(ids, IGNORE))
        item = {k: v[0] for k, v in out.items() if k in ("input_ids", "attention_mask", "mm_token_type_ids")}
        item["labels"] = labels
        for k, v in item.items():  # keep the start: images were checked to end before the cut-off
            item[k] = v[: self.cutoff]
        if images:
            item["pixel_values"] = out["pixel_values"]
            item["image_grid_thw"] = out["image_grid_thw"]
        return item


@dataclass
class VisionCollator:
    """Pads a batch of VL rows (right padding, labels -100 on padding), images concatenated."""

    encoder: VisionEncoder

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch
        from torch.nn.utils.rnn import pad_sequence

        items = [self.encoder.encode(e) for e in examples]
        pad_id = self.encoder.tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else self.encoder.tokenizer.eos_token_id
        batch = {
            "input_ids": pad_sequence([i["input_ids"] for i in items], batch_first=True, padding_value=pad_id),
            "attention_mask": pad_sequence([i["attention_mask"] for i in items], batch_first=True, padding_value=0),
            "labels": pad_sequence([i["labels"] for i in items], batch_first=True, padding_value=IGNORE),
        }
        if all("mm_token_type_ids" in i for i in items):
            batch["mm_token_type_ids"] = pad_sequence([i["mm_token_type_ids"] for i in items], batch_first=True,
                                                      padding_value=0)
        with_images = [i for i in items if "pixel_values" in i]
        if with_images:
            batch["pixel_values"] = torch.cat([i["pixel_values"] for i in with_images])
            batch["image_grid_thw"] = torch.cat([i["image_grid_thw"] for i in with_images])
        return batch
