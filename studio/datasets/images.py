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
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from studio.datasets import problems as P
from studio.datasets.canonical import ImageRef
from studio.datasets.options import DEFAULT_MAX_ASPECT_RATIO
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

    ``base_dirs``: relative paths are tried against each in order; the first that holds the file
    wins (the image root; or the data file's folder, its ancestors and their ``images/`` folders).
    ``allowed_roots``: no image is read from outside them, and no symbolic link below them is
    followed (a link could point anywhere on the machine).
    """

    def __init__(self, dataset_dir: Path, base_dirs: list[Path], allowed_roots: list[Path], max_pixels: int,
                 max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO, missing_hint: str = ""):
        self.images_dir = dataset_dir / IMAGES_DIR
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.base_dirs = [d.resolve() for d in base_dirs]
        self.allowed_roots = [r.resolve() for r in allowed_roots]
        self.max_pixels, self.max_aspect_ratio = max_pixels, max_aspect_ratio
        self.missing_hint = missing_hint or "check the path; it is read relative to the data file's folder"
        self._by_path: dict[Path, _Verdict] = {}
        self._by_name: dict[str, tuple[Path, Path | None] | _Verdict] = {}
        self.stored: set[str] = set()
        self.sources: dict[str, str] = {}  # original path -> stored name (kept in original/images.json)
        self.found_in: dict[str, Path | None] = {}  # stored name -> the base folder its file was found in

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
        if path not in self._by_name:  # rows name the same images again and again: search once per name
            self._by_name[path] = self._resolve(path)
        resolved = self._by_name[path]
        if isinstance(resolved, _Verdict):
            return resolved
        file, base = resolved
        if file not in self._by_path:
            self._by_path[file] = verdict = self._from_file(file, path)
            if verdict.stored:
                self.found_in.setdefault(verdict.stored, base)
        return self._by_path[file]

    def _resolve(self, path: str) -> tuple[Path, Path | None] | _Verdict:
        """``(file, base folder it was found in)``, or why it cannot be read."""
        if not path.strip():
            return _Verdict(None, P.MISSING_IMAGE, "image path is empty", "give the path of the image file")
        if "\0" in path:
            return _Verdict(None, P.NUL_BYTE, f"image path {path!r} contains a NUL byte", "remove the NUL character")
        path = path.removeprefix("file://")
        # Windows-made files write images\\a.jpg; on Linux a backslash in a file name is next to unheard of
        candidate = Path(path.replace("\\", "/") if "/" not in path else path)
        tries = [(None, candidate)] if candidate.is_absolute() else [(d, d / candidate) for d in self.base_dirs]
        refusal = None
        for base, option in tries:
            try:
                found = self._check_place(Path(os.path.normpath(option)), path)
            except OSError as e:  # a name too long for the file system, a permission denied on the way
                found = _Verdict(None, P.UNREADABLE_IMAGE, f"image {path!r} cannot be looked up: {e.strerror or e}",
                                 "check the path")
            if isinstance(found, Path):
                return found, base
            refusal = refusal or found
        return refusal or _Verdict(None, P.MISSING_IMAGE, f"image {path!r} not found", self.missing_hint)

    def _check_place(self, file: Path, label: str) -> Path | _Verdict | None:
        """``file`` if it may be read; a verdict if it exists but may not; ``None`` if absent."""
        root = next((r for r in self.allowed_roots if r == file or r in file.parents), None)
        if root is None:
            return _Verdict(None, P.MISSING_IMAGE, f"image {label!r} lies outside the uploaded data",
                            "use paths relative to the data file, and upload the images with it (e.g. in a zip)")
        link = _first_link(root, file)
        if link is not None:
            target = link.resolve()
            outside = not any(r == target or r in target.parents for r in self.allowed_roots)
            where = " to a file outside the uploaded data" if outside else ""
            return _Verdict(None, P.MISSING_IMAGE, f"image {label!r} is a symbolic link{where}; links are not followed",
                            "replace the link with the image file itself")
        return file if file.is_file() else None

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
        ext, bad = check_image_bytes(data, label, self.max_pixels, self.max_aspect_ratio)
        if bad is not None:
            return bad
        name = f"{IMAGES_DIR}/{hashlib.sha256(data).hexdigest()}.{ext}"
        if name not in self.stored:
            (self.images_dir.parent / name).write_bytes(data)
            self.stored.add(name)
        return _Verdict(name)


def _first_link(root: Path, path: Path) -> Path | None:
    """The first symbolic link on the way from ``root`` down to ``path``, if any."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return current
        if not current.exists():
            return None
    return None


def check_image_bytes(data: bytes, label: str, max_pixels: int,
                      max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO) -> tuple[str | None, _Verdict | None]:
    """``(extension, None)`` for a complete, supported, reasonably sized image that the vision
    processor can take, else ``(None, verdict)`` saying why not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
        except Image.DecompressionBombError as e:
            return None, _too_large(label, str(e))
        except Exception:  # UnidentifiedImageError, OSError, SyntaxError, EOFError, struct.error... on damage
            return None, _Verdict(None, P.UNSUPPORTED_IMAGE,
                                  f"{label!r} is not an image Pillow can read (unknown type or damaged header)",
                                  f"use one of {', '.join(sorted(EXTENSIONS))}")
        if fmt not in EXTENSIONS:
            return None, _Verdict(None, P.UNSUPPORTED_IMAGE, f"image {label!r} is {fmt}, which is not supported",
                                  f"convert it to one of {', '.join(sorted(EXTENSIONS))}")
        if w * h > max_pixels:
            return None, _too_large(label, f"{w}x{h} = {w * h / 1e6:.0f} MP, limit {max_pixels / 1e6:.0f} MP")
        if min(w, h) < 1 or max(w, h) / min(w, h) > max_aspect_ratio:
            return None, _bad_shape(label, w, h, max_aspect_ratio)
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


def _bad_shape(label: str, w: int, h: int, limit: float) -> _Verdict:
    ratio = f"{max(w, h) / min(w, h):.0f}:1" if min(w, h) else "degenerate"
    return _Verdict(None, P.IMAGE_SHAPE, f"image {label!r} is {w}x{h} (aspect ratio {ratio}); vision processors such "
                    f"as Qwen2.5-VL's refuse aspect ratios above {limit:g}:1",
                    "crop or pad the image to a less extreme shape")


def _too_large(label: str, detail: str) -> _Verdict:
    return _Verdict(None, P.IMAGE_TOO_LARGE, f"image {label!r} is too large ({detail})",
                    "resize it (a few megapixels is plenty: the processor downsizes to max_pixels anyway)")
