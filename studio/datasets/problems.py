"""Problems found while importing a dataset, and the error that carries them.

Validation reports *every* problem at once (file, row, field, reason, fix) instead of stopping at
the first, so a person fixes their file in one pass. A problem without a row concerns the whole
file (unparseable JSON, unknown format, unsafe archive) and always stops the import; a problem
with a row only stops it under ``on_error="fail"`` and is counted as skipped under ``"skip"``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable

# Codes are stable strings: the UI and tests match on them, the message is for people.
PARSE_ERROR = "parse_error"
ENCODING = "encoding"
UNKNOWN_FORMAT = "unknown_format"
MISSING_FIELD = "missing_field"
BAD_VALUE = "bad_value"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
CORRUPT_IMAGE = "corrupt_image"
IMAGE_TOO_LARGE = "image_too_large"
UNSUPPORTED_IMAGE = "unsupported_image"
REMOTE_IMAGE = "remote_image"
PLACEHOLDER_MISMATCH = "placeholder_mismatch"
ROLE_ORDER = "role_order"
UNKNOWN_ROLE = "unknown_role"
EMPTY_TURN = "empty_turn"
EMPTY_DATASET = "empty_dataset"
MISSING_CAPTION = "missing_caption"
UNSAFE_ARCHIVE = "unsafe_archive"
ARCHIVE_LIMIT = "archive_limit"
BAD_SOURCE = "bad_source"
TOO_DEEP = "too_deep"
NUMBER_TOO_LARGE = "number_too_large"
TEXT_TOO_LONG = "text_too_long"
NUL_BYTE = "nul_byte"
IMAGE_SHAPE = "image_shape"
SYMLINK = "symlink"
MISSING_COLUMN = "missing_column"
SAME_ANSWERS = "same_answers"  # a preference pair whose chosen and rejected are equal
MIXED_KINDS = "mixed_kinds"  # a preference row in an instruction file, or the reverse
INTERNAL = "internal_error"  # an input the importer did not foresee: reported, never a traceback


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input. ``row`` is 1-based (``None``: the whole file); ``line`` and
    ``column`` locate parse and encoding errors in the text of the file."""

    file: str
    row: int | None
    field: str | None
    code: str
    message: str
    hint: str = ""
    line: int | None = None
    column: int | None = None

    @property
    def fatal(self) -> bool:
        """File-level problems cannot be skipped row by row."""
        return self.row is None

    def where(self) -> str:
        """``data.json row 17, field `images``` / ``data.json line 3, column 22``."""
        loc = []
        if self.row is not None:
            loc.append(f"row {self.row}")
        if self.line is not None and (self.line != self.row or self.column is not None):
            loc.append(f"line {self.line}" + (f", column {self.column}" if self.column is not None else ""))
        if self.field:
            loc.append(f"field `{self.field}`")
        return " ".join([self.file, ", ".join(loc)]) if loc else self.file

    def __str__(self) -> str:
        text = f"{self.where()}: {self.message}"
        return f"{text} — {self.hint}" if self.hint else text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(problems: Iterable[Problem]) -> dict[str, int]:
    """Counts per code, for the import report ("12 missing_image, 3 role_order")."""
    return dict(Counter(p.code for p in problems))


class DatasetImportError(Exception):
    """An import was refused; nothing was written. ``problems`` lists every reason found."""

    MAX_IN_MESSAGE = 20

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        shown = [str(p) for p in self.problems[: self.MAX_IN_MESSAGE]]
        more = len(self.problems) - len(shown)
        if more > 0:
            shown.append(f"... and {more} more problem(s)")
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"dataset import failed with {len(self.problems)} {noun}:\n" + "\n".join(shown))


class RowProblems:
    """Collects the problems of one row; converters call ``add`` and keep going."""

    def __init__(self, file: str, row: int | None, line: int | None = None):
        self.file, self.row, self.line = file, row, line
        self.items: list[Problem] = []

    def add(self, field: str | None, code: str, message: str, hint: str = "", column: int | None = None) -> None:
        self.items.append(Problem(self.file, self.row, field, code, message, hint, self.line, column))

    def __bool__(self) -> bool:
        return bool(self.items)
