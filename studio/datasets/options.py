"""Typed import options: what the UI form and the CLI flags fill in (never positional args)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

OnError = Literal["fail", "skip"]

DEFAULT_INSTRUCTION = "Describe this image."
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000  # 50 MP: beyond this a file is treated as a decompression bomb
# Qwen2-VL/2.5-VL's smart_resize raises "absolute aspect ratio must be smaller than 200" beyond this,
# which would stop a training run hours in; refuse such images at import instead.
DEFAULT_MAX_ASPECT_RATIO = 200.0


@dataclass(frozen=True)
class ArchiveLimits:
    """Checked on the zip directory before a single byte is extracted."""

    max_entries: int = 100_000
    max_total_bytes: int = 20 * 1024**3  # uncompressed
    max_ratio: float = 200.0  # uncompressed / compressed, per entry and overall


@dataclass(frozen=True)
class RowLimits:
    """Checked on every parsed row: values no real dataset needs but hostile files use to crash or
    bloat a reader (a 20,000-digit number, JSON nested thousands deep, a megabyte in one field)."""

    max_depth: int = 64  # nested arrays/objects in one row; real chat rows with tool schemas stay < 20
    max_number_digits: int = 64  # digits of one JSON integer
    max_text_bytes: int = 256 * 1024  # UTF-8 bytes of one text field

    def check(self) -> list[str]:
        return [f"{name} must be at least 1" for name, value in asdict(self).items() if value < 1]


@dataclass(frozen=True)
class ImportOptions:
    """How to read and convert an upload.

    ``format``: one of ``studio.datasets.formats.FORMAT_NAMES`` or ``None`` to detect.
    ``column_map``: source column -> field the format expects (``{"prompt": "instruction"}``).
    ``val_fraction``: share of rows held out as ``validation.jsonl`` (seeded, exact count).
    ``limit``: keep at most this many good rows (after dedupe).
    ``on_error``: ``"fail"`` writes nothing if any row is bad; ``"skip"`` imports the good rows.
    ``image_root``: the folder relative image paths are read from (LLaVA's ``--image_folder``,
    LLaMA-Factory's ``media_dir``): absolute, or relative to the data file's folder, the upload's
    root (an archive's top, an uploaded folder) or the workspace, the first where it exists.
    ``None``: search the data file's folder and its ancestors up to the upload's root.
    """

    name: str | None = None
    format: str | None = None
    column_map: dict[str, str] = field(default_factory=dict)
    instruction: str = DEFAULT_INSTRUCTION
    val_fraction: float = 0.0
    seed: int = 42
    dedupe: bool = False
    limit: int | None = None
    on_error: OnError = "fail"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    image_root: str | None = None
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    rows: RowLimits = field(default_factory=RowLimits)

    def check(self) -> list[str]:
        """Every invalid option at once (for the form), empty when all are fine."""
        from studio.datasets.formats import FORMAT_NAMES

        errors = []
        if self.format is not None and self.format not in FORMAT_NAMES:
            errors.append(f"format {self.format!r} is unknown; choose one of {', '.join(FORMAT_NAMES)}")
        if not 0.0 <= self.val_fraction < 1.0:
            errors.append(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.limit is not None and self.limit < 1:
            errors.append(f"limit must be at least 1, got {self.limit}")
        if self.on_error not in ("fail", "skip"):
            errors.append(f"on_error must be 'fail' or 'skip', got {self.on_error!r}")
        if self.name is not None and not (0 < len(self.name.strip()) <= 200):
            errors.append("name must be 1 to 200 characters")
        if self.max_image_pixels < 1:
            errors.append("max_image_pixels must be positive")
        if not self.max_aspect_ratio >= 1:
            errors.append(f"max_aspect_ratio must be at least 1, got {self.max_aspect_ratio}")
        if self.image_root is not None and ("\0" in self.image_root or not self.image_root.strip()):
            errors.append("image_root must be a folder path (or left empty)")
        errors += self.rows.check()
        if not self.instruction.strip():
            errors.append("instruction for captions must not be empty")
        return errors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
