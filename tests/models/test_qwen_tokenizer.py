"""The Qwen2.5 tokenizer rebuilt from qwen.tiktoken reproduces the released ids."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.models.qwen_tokenizer import (
    ALL_ADDED,
    PRETOKENIZE_REGEX,
    QWEN25_VL_CHAT_TEMPLATE,
    load_ranks,
    truncate_ranks,
)

# Ids of the released Qwen2.5-VL tokenizer (tokenizer_config.json "added_tokens_decoder").
RELEASED_SPECIAL_IDS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647, "<|box_start|>": 151648, "<|box_end|>": 151649, "<|quad_start|>": 151650,
    "<|quad_end|>": 151651, "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658,
    "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663, "<|file_sep|>": 151664,
}

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # optional extra corpus

SAMPLES = [
    "Hello world",
    "  Leading spaces,\ttabs\n\n\nand   runs of   spaces!!  ",
    "Numbers 1234567 and 3.14159; emails a.b@c.org; URLs https://example.com/x?y=1",
    "def f(x):\n    return {'a': x ** 2}  # comment\n",
    "中文分词测试：今天天气很好。日本語も。한국어도.",
    "Ünïcödé café naïve — “quotes” … 🚀🔥",
]


def _tiktoken(ranks):
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding("qwen-ranks", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens={})


@pytest.fixture(scope="module")
def qwen_tokenizer(tiny_vl_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_vl_path)


def _corpus() -> list[str]:
    texts = list(SAMPLES)
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json"):
        path = SHARED_DATA / name
        if path.is_file():
            rows = json.loads(path.read_text(encoding="utf-8"))[:200]
            texts += [f"{r['instruction']}\n{r.get('input', '')}\n{r['output']}" for r in rows]
    return texts


def test_ids_match_tiktoken_ranks(qwen_tokenizer):
    enc = _tiktoken(load_ranks())
    hello = qwen_tokenizer.encode("Hello world", add_special_tokens=False)
    assert hello == enc.encode_ordinary("Hello world") == [9707, 1879]
    for text in _corpus():
        assert qwen_tokenizer.encode(text, add_special_tokens=False) == enc.encode_ordinary(text), text[:80]
        assert qwen_tokenizer.decode(enc.encode_ordinary(text)) == text


def test_special_tokens_have_released_ids(qwen_tokenizer):
    assert len(qwen_tokenizer) == 151665
    assert {t: qwen_tokenizer.convert_tokens_to_ids(t) for t in ALL_ADDED} == RELEASED_SPECIAL_IDS
    assert (qwen_tokenizer.eos_token, qwen_tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
    ids = qwen_tokenizer.encode("<|im_start|>user\nHi<|im_end|>", add_special_tokens=False)
    assert ids == [151644, 872, 198, 13048, 151645]  # never split, "user" = 872 as in Qwen2.5
    assert qwen_tokenizer.decode(ids, skip_special_tokens=True) == "user\nHi"
    assert qwen_tokenizer.decode([151657]) == "<tool_call>"  # tool markers are visible, not special


def test_chat_template_renders_qwen25_vl_chatml(qwen_tokenizer):
    assert qwen_tokenizer.chat_template == QWEN25_VL_CHAT_TEMPLATE
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
                {"role": "user", "content": "And now?"}]
    text = qwen_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n"
                    "<|im_start|>assistant\nA cat.<|im_end|>\n"
                    "<|im_start|>user\nAnd now?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    own_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = qwen_tokenizer.apply_chat_template(own_system, tokenize=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_small_vocab_tokenizer_is_truncated_qwen_bpe(tiny_vl_small_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_vl_small_path)
    assert len(tok) == 2048
    assert {t: tok.convert_tokens_to_ids(t) for t in ALL_ADDED} == {t: 2026 + i for i, t in enumerate(ALL_ADDED)}
    enc = _tiktoken(truncate_ranks(load_ranks(), 2026))
    for text in SAMPLES:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == enc.encode_ordinary(text) and max(ids) < 2026
        assert tok.decode(ids) == text
