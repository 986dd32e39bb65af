"""Statistics count tokens like the model will, image tokens included, and flag rows whose
cut-off falls inside an image's tokens."""
from __future__ import annotations

import pytest
from PIL import Image

from studio.datasets import import_dataset, read_canonical, statistics
from studio.datasets.stats import QwenImageTokens, compute_statistics, histogram, image_token_counter
from tests.datasets.helpers import upload

SMALL = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)


@pytest.fixture
def mllm(db, shared_data):
    src = upload(db, shared_data / "mllm_demo.json")
    upload(db, shared_data / "mllm_demo_data")
    return import_dataset(db, src).dataset


def test_text_only_lengths_match_the_chat_template(db, shared_data, tiny_tokenizer):
    d = import_dataset(db, upload(db, shared_data / "identity.json")).dataset
    s = statistics(db, d.id, tiny_tokenizer, cutoff_len=60, bins=10)
    rendered = [tiny_tokenizer.apply_chat_template(
        [{"role": m["role"], "content": m["content"][0]["text"]} for m in row["messages"]], tokenize=False)
        for row in read_canonical(db, d.id)]
    expected = sorted(len(tiny_tokenizer(text)["input_ids"]) for text in rendered)
    assert (s.rows, s.turns, s.images, s.image_tokens) == (91, 182, 0, 0)
    assert (s.min_tokens, s.max_tokens, s.median_tokens) == (expected[0], expected[-1], expected[45])
    assert s.rows_over_cutoff == sum(n > 60 for n in expected) > 0
    assert sum(s.histogram["counts"]) == 91 and len(s.histogram["edges"]) == 11
    assert s.rows_cut_inside_image == 0


def test_image_tokens_follow_smart_resize(db, mllm, tiny_tokenizer):
    rule = QwenImageTokens(**SMALL)
    s = statistics(db, mllm.id, tiny_tokenizer, image_tokens=rule, cutoff_len=100_000)
    expected = 0
    for row in read_canonical(db, mllm.id):
        for m in row["messages"]:
            for p in m["content"]:
                if p["type"] == "image":
                    w, h = Image.open(p["image"]).size
                    expected += rule(h, w)
    assert (s.rows, s.images) == (6, 8) and s.image_tokens == expected
    assert 8 * 4 <= expected <= 8 * 64  # within [min_pixels, max_pixels] / 28^2 per image


def test_rows_cut_inside_image_tokens_are_flagged(db, mllm, tiny_tokenizer):
    rule = QwenImageTokens(**SMALL)
    # every row starts "<|im_start|>user\n<|vision_start|><|image_pad|>...": a cut at 10 lands in the image
    inside = statistics(db, mllm.id, tiny_tokenizer, image_tokens=rule, cutoff_len=10)
    assert inside.rows_cut_inside_image == 6 and inside.cut_inside_image_rows == list(range(6))
    fine = statistics(db, mllm.id, tiny_tokenizer, image_tokens=rule, cutoff_len=100_000)
    assert fine.rows_cut_inside_image == 0 and fine.rows_over_cutoff == 0
    row = next(read_canonical(db, mllm.id))  # two images; cut between them: the second lies after the cut
    ids = tiny_tokenizer(tiny_tokenizer.apply_chat_template(row["messages"], tokenize=False))["input_ids"]
    pad = tiny_tokenizer.convert_tokens_to_ids("<|image_pad|>")
    first, second = [i for i, t in enumerate(ids) if t == pad]
    w, h = Image.open(row["messages"][0]["content"][0]["image"]).size
    n = rule(h, w)
    cut = second + (n - 1)  # exactly where the second image's tokens start once the first is expanded
    s = compute_statistics([row], tiny_tokenizer, image_tokens=rule, cutoff_len=cut)
    assert (s.rows_cut_inside_image, s.rows_image_after_cutoff) == (0, 1)
    s = compute_statistics([row], tiny_tokenizer, image_tokens=rule, cutoff_len=cut + 1)
    assert s.rows_cut_inside_image == 1


def test_counts_agree_with_a_real_qwen25_vl_processor(db, mllm, tiny_tokenizer):
    """The processor built from parts (no Hub): our count == the length of its input_ids."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    from tests.datasets.conftest import CHAT_TEMPLATE

    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**SMALL), tokenizer=tiny_tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    for row in read_canonical(db, mllm.id):
        images = [Image.open(p["image"]).convert("RGB") for m in row["messages"] for p in m["content"]
                  if p["type"] == "image"]
        text = processor.apply_chat_template(row["messages"], tokenize=False)
        real = len(processor(text=[text], images=images)["input_ids"][0])
        assert compute_statistics([row], processor).max_tokens == real
    default = statistics(db, mllm.id, processor)
    smaller = statistics(db, mllm.id, processor, max_pixels=28 * 28 * 16)
    assert smaller.image_tokens < default.image_tokens
    counter = image_token_counter(processor, max_pixels=28 * 28 * 16)
    assert counter(1000, 1000) == 16


def test_histogram_edges():
    assert histogram([0, 5, 9, 10], 2) == {"edges": [0, 6, 12], "counts": [2, 2]}
    assert histogram([], 3)["counts"] == [0, 0, 0]
