"""Readers for data files: JSON, JSON Lines, CSV/TSV and Parquet -> a stream of ``Record``.

One shape for every file type, so the format converters never care how a row was stored. Errors
are located precisely: JSON parse errors by line/column, JSONL and CSV problems by row and line,
bytes that are not UTF-8 by their byte offset in the file. A row that cannot be read is yielded
with its problems (so ``on_error="skip"`` can skip it); a file that cannot be read at all raises
``FileUnreadable``.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from studio.datasets import problems as P
from studio.datasets.problems import Problem
from studio.datasets.values import parse_int, walk

DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")
CSV_FIELD_LIMIT = 256 * 1024 * 1024
PARQUET_BATCH = 2048


@dataclass
class Record:
    """One input row: ``row`` is 1-based in the file's own terms (array index, line, data row)."""

    row: int
    data: dict[str, Any] | None
    line: int | None = None
    problems: list[Problem] = field(default_factory=list)


class FileUnreadable(Exception):
    """The whole file is unusable; carries the problems that say why."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def is_data_file(path: Path) -> bool:
    return path.suffix.lower() in DATA_SUFFIXES


def read_records(path: Path, display: str) -> Iterator[Record]:
    """Stream the rows of ``path``; ``display`` is the name used in messages."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path, display)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, display, "\t" if suffix == ".tsv" else None)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path, display)
    if suffix == ".json":
        return _read_json(path, display)
    raise FileUnreadable([Problem(display, None, None, P.BAD_SOURCE, f"unsupported file type {suffix!r}",
                                  f"use one of {', '.join(DATA_SUFFIXES)} or a .zip / folder")])


# -- text and encoding ------------------------------------------------------------------------------
def invalid_utf8_offsets(data: bytes, limit: int = 10_000) -> list[int]:
    """Byte offsets of every byte sequence that is not UTF-8 (fast path: one strict decode)."""
    offsets: list[int] = []
    pos = 0
    while len(offsets) < limit:
        try:
            data[pos:].decode("utf-8")
            break
        except UnicodeDecodeError as e:
            offsets.append(pos + e.start)
            pos += e.end
    return offsets


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    return line, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def _has_surrogate(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def _encoding_problems(rec_row: int, value: Any, file: str, data: bytes, offsets: Iterator[int]) -> list[Problem]:
    """Find strings decoded with ``surrogateescape`` that hold non-UTF-8 bytes; bad byte offsets are
    matched to them in file order (rows and their fields are read in file order)."""
    found: list[Problem] = []
    for path, text, _ in walk(value, max_depth=1_000_000):  # iterative: depth cannot crash it
        if isinstance(text, str) and _has_surrogate(text):
            off = next(offsets, None)
            where = ""
            line = col = None
            if off is not None:
                line, col = _line_col(data, off)
                where = f" (byte 0x{data[off]:02X} at byte offset {off})"
            found.append(Problem(file, rec_row, path or None, P.ENCODING, f"text is not valid UTF-8{where}",
                                 "save the file as UTF-8 (it looks like Latin-1 or Windows-1252)", line, col))
    return found


def _decode(data: bytes, file: str) -> tuple[str, list[int]]:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FileUnreadable([Problem(file, None, None, P.ENCODING, "file is UTF-16",
                                      "save it as UTF-8", 1, 1)])
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    offsets = invalid_utf8_offsets(data)
    return data.decode("utf-8", errors="surrogateescape"), offsets


# -- JSON -------------------------------------------------------------------------------------------
def _read_json(path: Path, file: str) -> Iterator[Record]:
    raw = path.read_bytes()
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    text, bad = _decode(raw, file)
    stripped = text.lstrip()
    if not stripped:
        raise FileUnreadable([Problem(file, None, None, P.EMPTY_DATASET, "file is empty", "upload a file with rows")])
    try:
        rows = _json_rows(json.loads(text, parse_int=parse_int), file)
        lines: list[int | None] | None = None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and stripped.startswith(("{", "[")):
            yield from _read_jsonl(path, file)  # JSON Lines saved as .json: read it as such
            return
        raise FileUnreadable([_json_error(file, e)]) from None
    except RecursionError:
        rows, lines = _rows_one_by_one(text, file)
    offsets = iter(bad)
    for i, item in enumerate(rows, 1):
        line = lines[i - 1] if lines else None
        if isinstance(item, Record):  # a row that could not be parsed on its own
            yield item
            continue
        item = as_row(item)
        if not isinstance(item, dict):
            yield Record(i, None, line, problems=[Problem(file, i, None, P.BAD_VALUE,
                                                          f"row is a {type(item).__name__}, not an object",
                                                          "every row must be a JSON object {...}", line)])
            continue
        probs = _encoding_problems(i, item, file, body, offsets) if bad else []
        yield Record(i, item, line, problems=probs)


def _json_rows(doc: Any, file: str) -> list[Any]:
    """A list of rows; ``{"data": [...]}``-style wrappers with exactly one list inside; one
    conversation object (``{"conversations": [...]}``); one bare list of turns."""
    if isinstance(doc, list):
        return [doc] if doc and all(_is_turn(t) for t in doc) else doc
    if isinstance(doc, dict):
        lists = [(k, v) for k, v in doc.items() if isinstance(v, list)]
        if len(lists) == 1 and len(doc) == 1:
            key, items = lists[0]
            one_conversation = key in CONVERSATION_KEYS and items and all(_is_turn(t) for t in items)
            return [doc] if one_conversation else items
        return [doc]
    raise FileUnreadable([Problem(file, None, None, P.PARSE_ERROR, f"top level is a {type(doc).__name__}",
                                  "the file must hold a JSON array of row objects")])


# A file of conversations sometimes holds one conversation, or a line holds just the list of
# turns: these keys and turn shapes tell such a list from a list of rows.
CONVERSATION_KEYS = ("conversations", "messages")


def _is_turn(item: Any) -> bool:
    return isinstance(item, dict) and ("role" in item or "from" in item) and ("content" in item or "value" in item)


def as_row(item: Any) -> Any:
    """A bare list of turns becomes one row (``messages`` for role/content turns, ShareGPT's
    ``conversations`` for from/value turns); anything else is returned as it is."""
    if isinstance(item, list) and item and all(_is_turn(t) for t in item):
        return {"conversations" if any("from" in t for t in item) else "messages": item}
    return item


# Strings (with escapes) and the structural characters of JSON: enough to find where the top-level
# elements of an array start and end without building them.
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]')


def _rows_one_by_one(text: str, file: str) -> tuple[list[Any], list[int | None]]:
    """The file nests deeper than the parser can go somewhere: parse each element of the
    top-level array on its own, so only the deep rows are refused (with their row and line)."""
    spans = _top_level_spans(text)
    if spans is None:
        raise FileUnreadable([Problem(file, None, None, P.TOO_DEEP, "JSON is nested too deeply to read",
                                      "flatten the structure; chat rows need only a few levels")])
    rows: list[Any] = []
    lines: list[int | None] = []
    line, counted_to = 1, 0
    for i, (start, end) in enumerate(spans, 1):
        start += len(text[start:end]) - len(text[start:end].lstrip())  # the row's own first line
        line, counted_to = line + text.count("\n", counted_to, start), start
        lines.append(line)
        try:
            rows.append(json.loads(text[start:end], parse_int=parse_int))
        except RecursionError:
            rows.append(Record(i, None, line, [Problem(file, i, None, P.TOO_DEEP, "row is nested too deeply to read",
                                                       "flatten the structure; chat rows need only a few levels",
                                                       line)]))
        except json.JSONDecodeError as e:
            rows.append(Record(i, None, line, [Problem(file, i, None, P.PARSE_ERROR, f"not valid JSON: {e.msg}",
                                                       "look for a missing comma, quote or bracket", line)]))
    return rows, lines


def _top_level_spans(text: str) -> list[tuple[int, int]] | None:
    """``(start, end)`` of every element of a top-level JSON array, or ``None`` if it is not one."""
    start = len(text) - len(text.lstrip())
    if text[start:start + 1] != "[":
        return None
    spans, depth, elem_start = [], 0, start + 1
    for m in _JSON_TOKENS.finditer(text, start):
        tok = m.group()
        if tok in "[{":
            depth += 1
        elif tok in "]}":
            depth -= 1
            if depth == 0:
                if text[elem_start:m.start()].strip():
                    spans.append((elem_start, m.start()))
                return spans
        elif tok == "," and depth == 1:
            spans.append((elem_start, m.start()))
            elem_start = m.end()
    return None  # unbalanced: the array never closes


def _json_error(file: str, e: json.JSONDecodeError, row: int | None = None) -> Problem:
    return Problem(file, row, None, P.PARSE_ERROR, f"not valid JSON: {e.msg}",
                   "look for a missing comma, quote or bracket just before this point", e.lineno, e.colno)


def _read_jsonl(path: Path, file: str) -> Iterator[Record]:
    offset = 0
    with path.open("rb") as fh:
        for lineno, line in enumerate(fh, 1):
            start, offset = offset, offset + len(line)
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line, start = line[3:], start + 3
            if not line.strip():
                continue
            yield _jsonl_record(file, lineno, start, line)


def _jsonl_record(file: str, lineno: int, start: int, line: bytes) -> Record:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return Record(lineno, None, lineno, [Problem(
            file, lineno, None, P.ENCODING,
            f"text is not valid UTF-8 (byte 0x{line[e.start]:02X} at byte offset {start + e.start})",
            "save the file as UTF-8 (it looks like Latin-1 or Windows-1252)", lineno, e.start + 1)])
    try:
        item = as_row(json.loads(text, parse_int=parse_int))
    except json.JSONDecodeError as e:
        return Record(lineno, None, lineno, [Problem(file, lineno, None, P.PARSE_ERROR, f"not valid JSON: {e.msg}",
                                                     "each line must be one complete JSON object", lineno, e.colno)])
    except RecursionError:
        return Record(lineno, None, lineno, [Problem(file, lineno, None, P.TOO_DEEP, "line is nested too deeply to read",
                                                     "flatten the structure; chat rows need only a few levels", lineno)])
    if not isinstance(item, dict):
        return Record(lineno, None, lineno, [Problem(file, lineno, None, P.BAD_VALUE,
                                                     f"line holds a {type(item).__name__}, not an object",
                                                     "each line must be one JSON object {...}", lineno)])
    return Record(lineno, item, lineno)


# -- CSV / TSV --------------------------------------------------------------------------------------
def _read_csv(path: Path, file: str, delimiter: str | None) -> Iterator[Record]:
    csv.field_size_limit(CSV_FIELD_LIMIT)
    raw = path.read_bytes()
    text, bad = _decode(raw, file)
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw
    delimiter = delimiter or _sniff_delimiter(text)
    # newline="": split only at \n / \r (str.splitlines would also split at U+2028 and friends)
    # strict: an unterminated quote is an error, not a field that swallows the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header = _csv_header(reader, file)
    offsets = iter(bad)
    row, last_line = 0, reader.line_num
    try:
        for values in reader:
            start_line, last_line = last_line + 1, reader.line_num
            if not any(v.strip() for v in values):
                continue
            row += 1
            yield _csv_record(file, row, start_line, header, values, body, offsets, bool(bad))
    except csv.Error as e:
        raise FileUnreadable([_csv_error(file, str(e), last_line + 1, reader.line_num)]) from None


def _csv_error(file: str, error: str, record_line: int, reader_line: int) -> Problem:
    if "unexpected end of data" in error:
        return Problem(file, None, None, P.PARSE_ERROR,
                       f"not valid CSV: a quoted field opened in the record starting on line {record_line} is never "
                       "closed", "close the quote (a quote inside a quoted field is written twice: \"\")", record_line)
    return Problem(file, None, None, P.PARSE_ERROR, f"not valid CSV: {error}",
                   "check the quoting on this line (a quote inside a quoted field is written twice: \"\")", reader_line)


def _sniff_delimiter(text: str) -> str:
    try:
        return csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
    except Exception:  # csv.Error "could not determine delimiter", or odd text confusing its heuristics
        return ","


def _csv_header(reader, file: str) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise FileUnreadable([Problem(file, None, None, P.EMPTY_DATASET, "file is empty",
                                      "the first line must name the columns")]) from None
    except csv.Error as e:
        raise FileUnreadable([_csv_error(file, str(e), 1, reader.line_num)]) from None
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes or not all(header):
        raise FileUnreadable([Problem(file, None, None, P.PARSE_ERROR,
                                      f"header has empty or repeated column names: {header}",
                                      "give every column a unique name on the first line", 1)])
    return header


def _csv_record(file, row, line, header, values, body, offsets, check_encoding) -> Record:
    if len(values) != len(header):
        return Record(row, None, line, [Problem(file, row, None, P.PARSE_ERROR,
                                                f"row has {len(values)} fields but the header has {len(header)}",
                                                "quote fields that contain the delimiter or line breaks", line)])
    data = dict(zip(header, values))
    probs = _encoding_problems(row, data, file, body, offsets) if check_encoding else []
    return Record(row, data, line, probs)


# -- Parquet ----------------------------------------------------------------------------------------
def _read_parquet(path: Path, file: str) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        batches = pf.iter_batches(batch_size=PARQUET_BATCH)
        row = 0
        for batch in batches:
            for item in batch.to_pylist():
                row += 1
                yield Record(row, item)
    except Exception as e:  # pyarrow's ArrowInvalid (ValueError), ArrowIOError, ArrowNotImplementedError...
        raise FileUnreadable([Problem(file, None, None, P.PARSE_ERROR, f"not a readable Parquet file: {e}",
                                      "re-export the file, or upload CSV/JSON instead")]) from None
