"""Built-in loaders: JSON array, JSONL, CSV, TSV, Parquet and a ``datasets`` save_to_disk folder.

Every loader yields one dict per record and raises DataError naming the file and the line
(or row) on malformed input. Text files are read as strict UTF-8 (a BOM on the first line is
accepted), so invalid bytes are reported where they are, not as garbled text later.

With ``skip_invalid=True`` (the CLI's ``--skip-invalid``) the line-oriented loaders yield the
DataError for a broken line or record instead of raising it, and go on with the next one;
``sftkit.pipeline`` collects those as the skipped lines. Errors about the whole file (empty,
not JSON at all, a bad header) are still raised.
"""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Iterator, Literal

from pydantic import AfterValidator, Field

from sftkit import DataError, hookimpl
from sftkit.io import bounded_lines, check_readable, open_for_reading, read_bounded, reading

MAX_CSV_FIELD = 2**31 - 1
# Bounds on what is read from one file, so a file that never ends (or a huge one given by
# mistake) is one message, not a memory error: one line of JSONL/CSV/TSV, and a JSON file
# that is read whole. Loader options raise them (``--loader-option max_line_bytes=...``).
MAX_LINE_BYTES = 256 * 2**20
MAX_JSON_BYTES = 2 * 2**30


ENCODING_ERRORS = ("strict", "replace")
SKIP_HINT = "fix the line, or pass --skip-invalid to skip broken lines (they are listed)"
INVALID_UTF8_HINT = ("re-save the file as UTF-8, or read it with --loader-option encoding_errors=replace "
                     "(bad bytes become U+FFFD, which validate reports as encoding_artifact)")
LONG_LINE_HINT = "is this the right file? To read longer lines pass --loader-option max_line_bytes=N"
CR_ONLY_HINT = ("convert the line ends to LF, e.g. tr '\\r' '\\n' < FILE > FIXED (or save it again with Unix or "
                "Windows line ends)")
BOM_HINT = ("files joined with cat keep each one's BOM: remove the bytes EF BB BF at the start of the line; "
            + SKIP_HINT)


# -- files that are not what their name says --------------------------------------------------

# The first bytes of common files that are not UTF-8 text: (magic, what it is, what to do).
MAGIC = (
    (b"\x1f\x8b", "gzip-compressed data", "decompress it first (gunzip)"),
    (b"PK\x03\x04", "a ZIP archive", "extract it first (unzip)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data", "decompress it first (zstd -d)"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "decompress it first (xz -d)"),
    (b"PAR1", "a Parquet file", "read it with --loader parquet (or give it the suffix .parquet)"),
    (b"\xff\xfe", "UTF-16 text", "re-save it as UTF-8, e.g. iconv -f UTF-16 -t UTF-8 FILE > FIXED"),
    (b"\xfe\xff", "UTF-16 text", "re-save it as UTF-8, e.g. iconv -f UTF-16 -t UTF-8 FILE > FIXED"),
    (b"\x00", "binary data (it starts with a NUL byte)", "is this the right file?"),
)


def _refuse_binary(path: Path, expected: str) -> None:
    """Refuse a text loader's file whose first bytes say it is compressed, Parquet, UTF-16 or binary."""
    with open_for_reading(path) as handle:
        head = handle.read(16)
    if head.startswith(b"BZh") and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        raise DataError(f"the file holds bzip2-compressed data, not {expected}", path=str(path),
                        hint="decompress it first (bunzip2)")
    for magic, what, todo in MAGIC:
        if head.startswith(magic):
            raise DataError(f"the file holds {what}, not {expected}", path=str(path), hint=todo)


# -- options, declared with their allowed values (sftkit.options checks them before any file is opened) ---

def _one_delimiter(value: str) -> str:
    if len(value) != 1:
        raise ValueError("exactly one character (e.g. ',' or ';'; tabs: the tsv loader)")
    if value in ('"', "\r", "\n") or value.isalnum() and value.isascii():
        raise ValueError("one character other than a quote, a line end, a letter or a digit")
    return value


MAX_BYTES_OPTION = 2**34  # 16 GiB: a larger limit for one line or one whole file is a mistake, not a need
EncodingErrors = Annotated[Literal[ENCODING_ERRORS], Field(
    description="strict: invalid UTF-8 is an error naming the line; replace: bad bytes become U+FFFD")]
SkipInvalid = Annotated[bool, Field(description="yield each broken line's error and go on (--skip-invalid)")]
MaxLineBytes = Annotated[int, Field(ge=1, le=MAX_BYTES_OPTION, description="the longest line read, in bytes")]
Delimiter = Annotated[str, AfterValidator(_one_delimiter), Field(description="the field separator, one character")]


def _decode_line(raw: bytes, path: Path, line_no: int, errors: str = "strict") -> str:
    if errors not in ENCODING_ERRORS:
        raise DataError(f"encoding_errors must be one of {ENCODING_ERRORS}, got {errors!r}", path=str(path))
    try:
        return raw.decode("utf-8-sig" if line_no == 1 else "utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"invalid UTF-8 at byte {exc.start} of the line ({raw[max(0, exc.start - 10):exc.start + 10]!r})",
            path=str(path), line=line_no, hint=INVALID_UTF8_HINT,
        ) from None


def jsonl(path: Path, encoding_errors: EncodingErrors = "strict", skip_invalid: SkipInvalid = False,
          max_line_bytes: MaxLineBytes = MAX_LINE_BYTES) -> Iterator[dict]:
    """JSON Lines: one JSON object per line (blank lines are skipped)."""
    _refuse_binary(path, "JSON Lines text")
    with open_for_reading(path) as handle:
        for line_no, raw in enumerate(bounded_lines(handle, path, max_line_bytes, hint=LONG_LINE_HINT), start=1):
            try:
                record = _jsonl_record(raw, path, line_no, encoding_errors)
            except DataError as exc:
                if not skip_invalid:
                    raise
                yield exc
                continue
            if record is not None:
                yield record


def _jsonl_record(raw: bytes, path: Path, line_no: int, encoding_errors: str) -> dict | None:
    text = _decode_line(raw, path, line_no, encoding_errors).strip()
    if not text:
        return None
    if text.startswith("\ufeff"):
        raise DataError("a byte order mark (BOM, U+FEFF) starts the line: was another file appended here?",
                        path=str(path), line=line_no, hint=BOM_HINT)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        if "\r" in text.rstrip("\r"):
            raise DataError("the line holds carriage returns (CR) without line feeds: the file seems to use old Mac "
                            "line ends (CR only), so its lines run together", path=str(path), line=line_no,
                            hint=CR_ONLY_HINT) from None
        raise DataError(f"invalid JSON at column {exc.colno}: {exc.msg}", path=str(path), line=line_no,
                        hint=SKIP_HINT) from None
    except RecursionError:
        raise DataError("JSON nested too deeply", path=str(path), line=line_no, hint=SKIP_HINT) from None
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", path=str(path),
                        line=line_no, hint="each line must be an object such as {\"instruction\": ...}; " + SKIP_HINT)
    if LONE_ESCAPE.search(text):
        record = _without_lone_surrogates(record, encoding_errors, path=str(path), line=line_no)
    return record


# A JSON escape such as "\ud800" without its pair decodes to a lone surrogate: not a character,
# it cannot be written as UTF-8 or tokenized. Strings from strict UTF-8 text never hold one.
LONE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(record: dict, errors: str, **where) -> dict:
    """The record, refused (strict) or with lone surrogates replaced by U+FFFD (replace)."""
    def fix(value, field):
        if isinstance(value, str) and SURROGATE.search(value):
            if errors != "replace":
                bad = SURROGATE.search(value).group()
                raise DataError(f"invalid Unicode: a lone surrogate escape \\u{ord(bad):04x} (half of a pair)",
                                field=field, hint=INVALID_UTF8_HINT.replace("re-save the file as UTF-8", "fix the escape"),
                                **where)
            return SURROGATE.sub("\ufffd", value)
        if isinstance(value, dict):
            return {k: fix(v, f"{field}.{k}" if field else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v, f"{field}.{i}") for i, v in enumerate(value)]
        return value

    return fix(record, "")


jsonl.suffixes = (".jsonl", ".ndjson")


def _read_text(path: Path, errors: str = "strict", max_bytes: int = MAX_JSON_BYTES) -> str:
    data = read_bounded(path, max_bytes, hint="a JSON array is read whole: convert the file to JSON Lines (.jsonl, "
                                              "read line by line), or pass --loader-option max_bytes=N")
    try:
        return data.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"invalid UTF-8 ({data[exc.start:exc.start + 4]!r})", path=str(path), line=line,
                        hint=INVALID_UTF8_HINT) from None


def json_array(path: Path,
               key: Annotated[str, Field(description="the top-level key holding the array (default: the only "
                                                     "array there)")] = "",
               encoding_errors: EncodingErrors = "strict", skip_invalid: SkipInvalid = False,
               max_bytes: Annotated[int, Field(ge=1, le=MAX_BYTES_OPTION, description="the largest file read "
                                                                                      "whole, in bytes")] = MAX_JSON_BYTES,
               ) -> Iterator[dict]:
    """A JSON file holding an array of objects (or an object whose ``key`` holds the array)."""
    check_readable(path)
    _refuse_binary(path, "JSON text")
    text = _read_text(path, encoding_errors, max_bytes)
    if not text.strip():
        raise DataError("the file is empty", path=str(path), hint="expected a JSON array of objects")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"invalid JSON at column {exc.colno}: {exc.msg}", path=str(path), line=exc.lineno) from None
    except RecursionError:
        raise DataError("JSON nested too deeply", path=str(path)) from None
    except MemoryError:
        raise DataError("the JSON is too large to read whole", path=str(path),
                        hint="convert the file to JSON Lines (.jsonl), which is read line by line") from None
    lone_escapes = bool(LONE_ESCAPE.search(text))
    if key:
        if not isinstance(data, dict) or key not in data:
            raise DataError(f"no key {key!r} at the top level", path=str(path))
        data = data[key]
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) == 1:
            data = data[lists[0]]
        elif len(lists) > 1:
            raise DataError(f"the top-level object holds {len(lists)} arrays ({', '.join(map(str, lists))})",
                            path=str(path), hint=f"choose one with --loader-option key={lists[0]}")
    if not isinstance(data, list):
        raise DataError(f"expected a JSON array of objects, got {type(data).__name__}", path=str(path),
                        hint="for one object per line use a .jsonl file")
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            error = DataError(f"expected an object, got {type(record).__name__}", path=str(path), row=index,
                              hint="the array must hold objects such as {\"instruction\": ...}; " + SKIP_HINT)
            if not skip_invalid:
                raise error
            yield error
            continue
        if lone_escapes:
            try:
                record = _without_lone_surrogates(record, encoding_errors, path=str(path), row=index)
            except DataError as error:
                if not skip_invalid:
                    raise
                yield error
                continue
        yield record


json_array.suffixes = (".json",)


def _delimited(path: Path, delimiter: str, encoding_errors: str = "strict",
               skip_invalid: bool = False, max_line_bytes: int = MAX_LINE_BYTES, loader: str = "csv") -> Iterator[dict]:
    check_readable(path)
    _refuse_binary(path, "CSV text" if loader == "csv" else "TSV text")
    csv.field_size_limit(min(sys.maxsize, MAX_CSV_FIELD))
    lines = _Lines(path, encoding_errors, skip_invalid, max_line_bytes)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("the file is empty", path=str(path), hint="the first line must name the columns") from None
    except csv.Error as exc:
        if lines.cr_only:
            raise DataError("the file uses old Mac line ends (CR only): its lines run together into one",
                            path=str(path), line=1, hint=CR_ONLY_HINT) from None
        raise DataError(f"malformed header: {exc}", path=str(path), line=1) from None
    header = [name.strip() for name in header]
    duplicates = {name for name in header if header.count(name) > 1}
    if duplicates:
        raise DataError(f"duplicate column name(s) {sorted(duplicates)}", path=str(path), line=1)
    while True:
        error = None
        first_line = lines.line_no + 1
        try:
            row = next(reader)
        except StopIteration:
            yield from lines.take_bad()
            return
        except csv.Error as exc:
            where = "" if lines.line_no == first_line else f" (the record starts on line {first_line})"
            if lines.cr_only:
                row, error = [], DataError("the line holds carriage returns (CR) without line feeds: the file seems "
                                           "to use old Mac line ends (CR only)", path=str(path), line=lines.line_no,
                                           hint=CR_ONLY_HINT)
            else:
                row, error = [], DataError(f"malformed CSV: {exc}{where}", path=str(path), line=lines.line_no,
                                           hint="check the quoting; " + SKIP_HINT)
        yield from lines.take_bad()
        if error is None and len(row) > len(header):
            error = DataError(f"{len(row)} fields but the header has {len(header)}", path=str(path),
                              line=lines.line_no, hint="quote fields that contain the delimiter; " + SKIP_HINT)
        if error is not None:
            if not skip_invalid:
                raise error
            yield error
            continue
        if not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
            continue
        record = dict(zip(header, row))
        for name in header[len(row):]:
            record[name] = None
        yield record


class _Lines:
    """Decoded lines of a file, counting physical lines (``line_no``: the last one read).

    With ``skip_invalid``, an undecodable line after the header is noted (``take_bad``) and
    left out instead of raised.
    """

    def __init__(self, path: Path, errors: str = "strict", skip_invalid: bool = False,
                 max_line_bytes: int = MAX_LINE_BYTES):
        self.path, self.errors, self.skip_invalid = path, errors, skip_invalid
        self.max_line_bytes = max_line_bytes
        self.line_no = 0
        self.cr_only = False  # the last line read holds a CR that no LF follows (old Mac line ends)
        self.bad: list[DataError] = []

    def __iter__(self) -> Iterator[str]:
        with open_for_reading(self.path) as handle:
            lines = bounded_lines(handle, self.path, self.max_line_bytes, hint=LONG_LINE_HINT)
            for line_no, raw in enumerate(lines, start=1):
                self.line_no = line_no
                self.cr_only = b"\r" in raw.rstrip(b"\r\n")
                try:
                    text = _decode_line(raw, self.path, line_no, self.errors)
                    if line_no > 1 and text.startswith("\ufeff"):
                        raise DataError("a byte order mark (BOM, U+FEFF) starts the line: was another file appended "
                                        "here?", path=str(self.path), line=line_no, hint=BOM_HINT)
                    yield text
                except DataError as exc:
                    if not self.skip_invalid or line_no == 1:
                        raise
                    self.bad.append(exc)

    def take_bad(self) -> list[DataError]:
        """The undecodable lines noted since the last call."""
        bad, self.bad = self.bad, []
        return bad


def csv_file(path: Path, delimiter: Delimiter = ",", encoding_errors: EncodingErrors = "strict",
             skip_invalid: SkipInvalid = False, max_line_bytes: MaxLineBytes = MAX_LINE_BYTES) -> Iterator[dict]:
    """Comma-separated values with a header line (quoted fields may span lines)."""
    return _delimited(path, delimiter, encoding_errors, skip_invalid, max_line_bytes, loader="csv")


csv_file.suffixes = (".csv",)


def tsv(path: Path, encoding_errors: EncodingErrors = "strict", skip_invalid: SkipInvalid = False,
        max_line_bytes: MaxLineBytes = MAX_LINE_BYTES) -> Iterator[dict]:
    """Tab-separated values with a header line."""
    return _delimited(path, "\t", encoding_errors, skip_invalid, max_line_bytes, loader="tsv")


tsv.suffixes = (".tsv", ".tab")


def parquet(path: Path, batch_size: Annotated[int, Field(ge=1, le=2**24, description="rows read per "
                                                                                     "batch")] = 4096) -> Iterator[dict]:
    """An Apache Parquet file, read in batches, one row group after the other.

    A corrupt page is one DataError naming the file and the row group (the rows before it
    have been read; a Parquet file cannot be skipped into past a broken page).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_readable(path)
    try:
        handle = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"not a readable Parquet file ({_first_line(exc)})", path=str(path)) from None
    rows = 0
    for group in range(handle.metadata.num_row_groups):
        batches = handle.iter_batches(batch_size=batch_size, row_groups=[group])
        while True:
            try:
                batch = next(batches, None)
                records = batch.to_pylist() if batch is not None else None
            except (OSError, pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
                if isinstance(exc, OSError) and exc.errno is not None:
                    raise DataError(f"cannot read: {exc.strerror or exc}", path=str(path)) from None
                raise DataError(f"corrupt or unreadable Parquet data in row group {group} (rows from {rows}): {_first_line(exc)}",
                                path=str(path), hint="the file is damaged: write it again from its source") from None
            if records is None:
                break
            rows += len(records)
            yield from records


parquet.suffixes = (".parquet", ".pq")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def hf_disk(path: Path, split: Annotated[str, Field(description="the split of a DatasetDict folder")] = "train",
            ) -> Iterator[dict]:
    """A folder written by ``datasets`` ``save_to_disk`` (a Dataset or a DatasetDict split)."""
    check_readable(path, folder=True, what="hf_disk loader (a datasets save_to_disk folder)")
    try:
        from datasets import load_from_disk
    except ImportError:
        raise DataError("reading a save_to_disk folder needs the 'datasets' package", path=str(path)) from None
    try:
        data = load_from_disk(str(path))
    except Exception as exc:
        raise DataError(f"not a readable datasets folder ({_first_line(exc)})", path=str(path)) from None
    if hasattr(data, "keys") and not hasattr(data, "features"):
        if split not in data:
            raise DataError(f"no split {split!r}; splits: {', '.join(data.keys())}", path=str(path),
                            hint="choose one with --loader-option split=NAME")
        data = data[split]
    with reading(path, "datasets folder"):
        for record in data:
            yield dict(record)


def _is_datasets_folder(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("dataset_info.json", "dataset_dict.json", "state.json")
    )


hf_disk.matches = _is_datasets_folder


@hookimpl
def register_loaders(register):
    """The built-in file formats."""
    register(json_array, name="json")
    register(jsonl)
    register(csv_file, name="csv")
    register(tsv)
    register(parquet)
    register(hf_disk)
