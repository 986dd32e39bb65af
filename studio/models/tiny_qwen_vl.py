"""Tiny random-weight Qwen2.5-VL models, built from a config, for tests and offline demos.

TEST MODELS: the weights are random (fixed seed), so replies are gibberish. What is real is
everything around the weights: the architecture class (`Qwen2_5_VLForConditionalGeneration`), the
Qwen2.5 tokenizer with its real ids, the chat template and the image processor. That is enough to
exercise the whole vision-language pipeline (data collation, image tokens, LoRA targets, training,
merging, export) on a CPU in seconds, without the Hub.

Shapes follow the real model family scaled down (see PLATFORM.md): text hidden 64, 2 layers, 4 heads
/ 2 KV heads (head_dim 16, so the multimodal RoPE sections sum to 8); vision depth 2, hidden 32,
projecting to 64, patch 14, 2x2 merge.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .qwen_tokenizer import QWEN_RANKS, build_qwen2_tokenizer, special_token_ids

SEED = 1234
SMALL_VOCAB_RANKS = 2026  # + 22 added tokens = 2048, a round embedding size
REAL_VOCAB_SIZE = 151936  # the released embedding size (151,665 tokens padded up to a multiple of 128)

# Small images keep tests fast: at most 256 merged vision tokens per image (28*28 pixels each).
MIN_PIXELS = 28 * 28 * 4
MAX_PIXELS = 28 * 28 * 256

Progress = Callable[[float, str], None]


def _ids(first_added: int) -> dict[str, int]:
    return special_token_ids(first_added)


# Why the small test model starts from larger random weights than transformers' 0.02: its LM head is
# the tied, frozen embedding table, so with std 0.02 and hidden size 64 the logits can move by about
# +-1.3 at most and the loss of any adapter plateaus ~0.15 below uniform (ln 2048 = 7.6), inside
# Adam's step-to-step noise. At 0.1 a few steps of LoRA or QLoRA clearly lower the loss on every CPU.
SMALL_VOCAB_INIT_RANGE = 0.1


def config_dict(small_vocab: bool) -> dict:
    """The config.json of the tiny model (plain dict; no torch/transformers needed to read it)."""
    first_added = SMALL_VOCAB_RANKS if small_vocab else QWEN_RANKS
    vocab_size = SMALL_VOCAB_RANKS + 22 if small_vocab else REAL_VOCAB_SIZE
    ids = _ids(first_added)
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "dtype": "float32",
        "tie_word_embeddings": True,  # as in Qwen2.5-VL-3B; keeps the ~10 M parameters mostly one table
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "text_config": {
            "model_type": "qwen2_5_vl_text",
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6,
            **({"initializer_range": SMALL_VOCAB_INIT_RANGE} if small_vocab else {}),
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "use_cache": True,
        },
        "vision_config": {
            "model_type": "qwen2_5_vl_vision",
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 64,
            "in_channels": 3,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
            "hidden_act": "silu",
        },
    }


def build(out: Path, *, small_vocab: bool, progress: Progress) -> None:
    """Write config, seeded random safetensors weights, tokenizer, processor and generation config."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    progress(0.05, "building the Qwen2.5 tokenizer from qwen.tiktoken ranks")
    tokenizer = build_qwen2_tokenizer(vocab_limit=SMALL_VOCAB_RANKS if small_vocab else None)
    progress(0.35, "creating the processor (image + video)")
    processor = _make_processor(tokenizer)
    progress(0.45, "initialising random weights (fixed seed)")
    cfg = config_dict(small_vocab)
    config = Qwen2_5_VLConfig(**cfg)
    with torch.random.fork_rng(devices=[]):  # reproducible weights without touching the caller's RNG
        torch.manual_seed(SEED)
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = _generation_config(GenerationConfig, cfg["text_config"])
    progress(0.7, "saving safetensors weights")
    model.save_pretrained(out)
    progress(0.9, "saving tokenizer and processor")
    processor.save_pretrained(out)


def _generation_config(cls, text: dict):
    # Greedy by default: reproducible replies in tests (the released model samples with top_k=1 anyway).
    return cls(bos_token_id=text["bos_token_id"], pad_token_id=text["pad_token_id"],
               eos_token_id=[text["eos_token_id"], text["bos_token_id"]], do_sample=False)


def _make_processor(tokenizer):
    """Qwen2_5_VLProcessor with small pixel bounds. The torchvision image/video processors are the
    stock ones; without torchvision, fall back to the PIL image processor and no video support."""
    from transformers import Qwen2_5_VLProcessor

    from .qwen_tokenizer import QWEN25_VL_CHAT_TEMPLATE

    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    try:
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor
        image_processor = Qwen2VLImageProcessor(size=size)
        video_processor = Qwen2VLVideoProcessor(size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})
    except ImportError:  # torchvision missing
        from transformers import Qwen2VLImageProcessorPil
        image_processor, video_processor = Qwen2VLImageProcessorPil(size=size), None
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video_processor, chat_template=QWEN25_VL_CHAT_TEMPLATE)
