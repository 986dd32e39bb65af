"""What an export request may ask for, checked before anything is queued (no torch import).

Every problem with a request is reported at once, as the run spec does, so the UI can show them
all beside the widgets instead of failing minutes later in the worker.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

MERGED, ADAPTER, GGUF = "merged", "adapter", "gguf"
KINDS = (MERGED, ADAPTER, GGUF)

# GGUF output types: llama.cpp's F16/BF16 and Q8_0. Q4_K_M/Q5_K_M are not offered: the `gguf`
# package can read but not write k-quants, and llama.cpp's C quantiser needs a compiler here.
GGUF_TYPES = ("f16", "bf16", "q8_0")
DEFAULT_GGUF_TYPE = "q8_0"
GGUF_TYPE_ALIASES = {"f16": "f16", "fp16": "f16", "float16": "f16", "bf16": "bf16", "bfloat16": "bf16",
                     "q8_0": "q8_0", "q8": "q8_0"}

# Full-precision dtypes only: merging into quantized (4/8-bit) weights is lossy (PLATFORM.md:
# top-1 agreement ~68% for QLoRA merged into nf4), so a QLoRA adapter is merged into a reload too.
DTYPE_ALIASES = {
    "auto": "auto",
    "fp32": "float32", "float32": "float32",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "float16": "float16",
}
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")

DEFAULT_SHARD_SIZE = "2GB"
_SHARD_RE = re.compile(r"^\s*(\d+)\s*(kb|mb|gb|kib|mib|gib)\s*$", re.IGNORECASE)
_UNIT_BYTES = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_UNIT_NAME = {"kb": "KB", "mb": "MB", "gb": "GB", "kib": "KiB", "mib": "MiB", "gib": "GiB"}
MIN_SHARD_BYTES = 10**6  # smaller shards mean thousands of files and nothing gained
MAX_SHARD_BYTES = 100 * 10**9


class ExportOptionsError(ValueError):
    """An export request was refused; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("the export request has problems:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True)
class ExportOptions:
    """One export request, normalised: ``kind`` merged|adapter, ``dtype`` auto (the base model's
    dtype from config.json) or a full-precision dtype, ``shard_size`` like "2GB", ``device``
    auto (CUDA when present) | cpu | cuda. ``gguf_type`` (kind gguf only) f16 | bf16 | q8_0: the
    merged model is built as for ``merged`` (with ``dtype``), then written as one GGUF file."""

    kind: str = MERGED
    dtype: str = "auto"
    shard_size: str = DEFAULT_SHARD_SIZE
    device: str = "auto"
    gguf_type: str | None = None

    @classmethod
    def parse(cls, kind: str = MERGED, dtype: str = "auto", shard_size: str | int = DEFAULT_SHARD_SIZE,
              device: str = "auto", gguf_type: str | None = None) -> "ExportOptions":
        problems: list[str] = []
        if kind not in KINDS:
            problems.append(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        norm_dtype = DTYPE_ALIASES.get(str(dtype).lower().removeprefix("torch."))
        if norm_dtype is None:
            problems.append(f"dtype {dtype!r} is not one of auto, float32/fp32, bfloat16/bf16, float16/fp16 "
                            "(quantized exports are not offered: merging into 4/8-bit weights is lossy)")
        norm_shard = _normalise_shard_size(shard_size, problems)
        if device not in DEVICES:
            problems.append(f"device {device!r} is not one of {', '.join(DEVICES)}")
        norm_gguf = _normalise_gguf_type(kind, gguf_type, problems)
        if problems:
            raise ExportOptionsError(problems)
        return cls(kind=kind, dtype=norm_dtype, shard_size=norm_shard, device=device,  # type: ignore[arg-type]
                   gguf_type=norm_gguf)

    @property
    def label(self) -> str:
        """``merged``, ``adapter`` or ``gguf-q8_0``: the kind as names and tables show it."""
        return f"{GGUF}-{self.gguf_type}" if self.kind == GGUF else self.kind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExportOptions":
        return cls.parse(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _normalise_gguf_type(kind: str, gguf_type: str | None, problems: list[str]) -> str | None:
    if kind != GGUF:
        if gguf_type:
            problems.append(f"a GGUF type ({gguf_type}) only applies to kind gguf, not {kind}")
        return None
    norm = GGUF_TYPE_ALIASES.get(str(gguf_type or DEFAULT_GGUF_TYPE).strip().lower())
    if norm is None:
        problems.append(f"GGUF type {gguf_type!r} is not one of {', '.join(GGUF_TYPES)} (Q4_K_M/Q5_K_M need "
                        "llama.cpp's compiled quantiser: run llama-quantize on the f16 file)")
    return norm


def shard_size_bytes(shard_size: str) -> int:
    m = _SHARD_RE.match(shard_size)
    if not m:
        raise ValueError(f"not a shard size: {shard_size!r}")
    return int(m.group(1)) * _UNIT_BYTES[m.group(2).lower()]


def _normalise_shard_size(value: str | int, problems: list[str]) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"{value // 10**6}MB"
    m = _SHARD_RE.match(str(value))
    if not m:
        problems.append(f"shard size {value!r} must be a whole number and a unit, e.g. 2GB, 500MB or 4GiB")
        return str(value)
    text = f"{int(m.group(1))}{_UNIT_NAME[m.group(2).lower()]}"
    size = shard_size_bytes(text)
    if not MIN_SHARD_BYTES <= size <= MAX_SHARD_BYTES:
        problems.append(f"shard size {text} must lie between 1MB and 100GB")
    return text
