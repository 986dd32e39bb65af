"""Checking and storing images under content-hash names.

Every image is fully decoded once (Pillow ``verify`` + ``load``) so a truncated or corrupt file is
caught at import, not hours into training. Dimensions are checked before decoding so a tiny file
claiming gigapixels (a decompression bomb) is refused without allocating it. Identical files are
stored once: the name is the SHA-256 of the bytes.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from studio.datasets import problems as P
from studio.datasets.canonical import ImageRef
from studio.datasets.problems import RowProblems

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
IMAGES_DIR = "images"


@dataclass(frozen=True)
class _Verdict:
    """The outcome for one source image, cached so a file used by many rows is checked once."""

    stored: str | None = None
    code: str = ""
    message: str = ""
    hint: str = ""


class ImageStore:
    """Resolves image references of one upload and copies good images into ``<dataset>/images``.

    ``base_dirs``: relative paths are resolved against the first where the file exists (the data
    file's folder, then for archives the archive's top folder).
    ``allowed_root``: no image may be read from outside it (the archive or the workspace).
    """

    def __init__(self, dataset_dir: Path, base_dirs: list[Path], allowed_root: Path, max_pixels: int):
        self.images_dir = dataset_dir / IMAGES_DIR
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.base_dirs = [d.resolve() for d in base_dirs]
        self.allowed_root = allowed_root.resolve()
        self.max_pixels = max_pixels
        self._by_path: dict[Path, _Verdict] = {}
        self.stored: set[str] = set()
        self.sources: dict[str, str] = {}  # original path -> stored name (kept in original/images.json)

    @property
    def count(self) -> int:
        return len(self.stored)

    def add(self, ref: ImageRef, probs: RowProblems, field: str) -> str | None:
        """The stored name (``images/<sha>.<ext>``), or ``None`` after recording a problem."""
        verdict = self._verdict(ref)
        if verdict.stored is None:
            probs.add(field, verdict.code, verdict.message, verdict.hint)
        elif ref.path:
            self.sources.setdefault(ref.path, verdict.stored)
        return verdict.stored

    def _verdict(self, ref: ImageRef) -> _Verdict:
        if ref.data is not None:
            return self._store(ref.data, ref.label)
        path = ref.path or ""
        if path.startswith("data:"):
            return self._from_data_uri(path)
        if path.startswith(("http://", "https://", "ftp://")):
            return _Verdict(None, P.REMOTE_IMAGE, f"image {path!r} is a web address",
                            "download the images and put them next to the data file (the studio works offline)")
        resolved = self._resolve(path)
        if isinstance(resolved, _Verdict):
            return resolved
        if resolved not in self._by_path:
            self._by_path[resolved] = self._from_file(resolved, path)
        return self._by_path[resolved]

    def _resolve(self, path: str) -> Path | _Verdict:
        if not path.strip():
            return _Verdict(None, P.MISSING_IMAGE, "image path is empty", "give the path of the image file")
        candidate = Path(path.removeprefix("file://"))
        options = [candidate.resolve()] if candidate.is_absolute() else [(d / candidate).resolve() for d in self.base_dirs]
        resolved = next((p for p in options if p.is_file()), options[0])
        if self.allowed_root not in resolved.parents:
            return _Verdict(None, P.MISSING_IMAGE, f"image {path!r} lies outside the uploaded data",
                            "use paths relative to the data file, and upload the images with it (e.g. in a zip)")
        return resolved

    def _from_file(self, resolved: Path, label: str) -> _Verdict:
        if not resolved.is_file():
            return _Verdict(None, P.MISSING_IMAGE, f"image {label!r} not found",
                            "check the path; it is read relative to the data file's folder")
        try:
            data = resolved.read_bytes()
        except OSError as e:
            return _Verdict(None, P.UNREADABLE_IMAGE, f"image {label!r} cannot be read: {e.strerror or e}",
                            "check the file's permissions")
        return self._store(data, label)

    def _from_data_uri(self, uri: str) -> _Verdict:
        try:
            data = base64.b64decode(uri.split(",", 1)[1], validate=True)
        except (IndexError, binascii.Error, ValueError):
            return _Verdict(None, P.CORRUPT_IMAGE, "inline data: image is not valid base64",
                            "re-encode the image as data:image/png;base64,...")
        return self._store(data, "<inline image>")

    def _store(self, data: bytes, label: str) -> _Verdict:
        ext, bad = check_image_bytes(data, label, self.max_pixels)
        if bad is not None:
            return bad
        name = f"{IMAGES_DIR}/{hashlib.sha256(data).hexdigest()}.{ext}"
        if name not in self.stored:
            (self.images_dir.parent / name).write_bytes(data)
            self.stored.add(name)
        return _Verdict(name)


def check_image_bytes(data: bytes, label: str, max_pixels: int) -> tuple[str | None, _Verdict | None]:
    """``(extension, None)`` for a complete, supported, reasonably sized image, else
    ``(None, verdict)`` saying why not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
        except Image.DecompressionBombError as e:
            return None, _too_large(label, str(e))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return None, _Verdict(None, P.UNSUPPORTED_IMAGE,
                                  f"{label!r} is not an image Pillow can read (unknown type or damaged header)",
                                  f"use one of {', '.join(sorted(EXTENSIONS))}")
        if fmt not in EXTENSIONS:
            return None, _Verdict(None, P.UNSUPPORTED_IMAGE, f"image {label!r} is {fmt}, which is not supported",
                                  f"convert it to one of {', '.join(sorted(EXTENSIONS))}")
        if w * h > max_pixels:
            return None, _too_large(label, f"{w}x{h} = {w * h / 1e6:.0f} MP, limit {max_pixels / 1e6:.0f} MP")
        broken = _decode_fully(data, label)
        return (None, broken) if broken else (EXTENSIONS[fmt], None)


def _decode_fully(data: bytes, label: str) -> _Verdict | None:
    """``verify`` checks structure (PNG CRCs); ``load`` decodes every pixel (truncated JPEGs)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... on damage
        return _Verdict(None, P.CORRUPT_IMAGE, f"image {label!r} is damaged or truncated ({e})",
                        "re-export or re-download the image")
    return None


def _too_large(label: str, detail: str) -> _Verdict:
    return _Verdict(None, P.IMAGE_TOO_LARGE, f"image {label!r} is too large ({detail})",
                    "resize it (a few megapixels is plenty: the processor downsizes to max_pixels anyway)")
