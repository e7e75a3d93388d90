"""The encoded training data in an Arrow cache, memory-mapped by every process.

A training file is rendered, masked and tokenized once; its samples (``sftkit.train.data``)
are written as four int32/float32 list columns (``input_ids``, ``source``, ``target``,
``weight``) with ``datasets``' own Arrow writer into ``$SFTKIT_DATA_CACHE/<key>/data.arrow``
(default ``~/.cache/sftkit/encoded``), and read back with ``datasets.Dataset.from_file``: a
memory map, so N processes share one copy in the page cache and a sample is read when a batch
needs it. ``meta.json`` (row counts, truncation, skipped lines) is written last and the folder
is renamed into place, so a cache folder is complete or absent.

The key is a hash of everything that decides the tokens: the file's bytes, how it is read
(loader, options, columns, instruction, skip_invalid), the resolved dataset spec, the template
and masking strategy with their options, the max length, the tokenizer (its full
serialisation, special and added tokens, chat template) and sftkit's version. The next run
with the same key reads the cache and tokenizes nothing.

Encoding without validation runs in ``num_proc`` forked worker processes, one chunk of
1,024 rows at a time, each returning compact arrays; with validation, the encodings the
validators made are converted (each row is still tokenized once per run).
"""
from __future__ import annotations

import json
import os
import shutil
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from sftkit.train.data import Sample, to_sample

FORMAT = 1
COLUMNS = ("input_ids", "source", "target", "weight")
CHUNK_ROWS = 1024  # rows per tokenizing task: a worker holds one chunk's full encodings (~250 bytes a token)
META_FILE = "meta.json"
DATA_FILE = "data.arrow"


def cache_root() -> Path:
    """``$SFTKIT_DATA_CACHE``, else ``<sftkit cache>/encoded``."""
    from sftkit.models import cache_dir

    return Path(os.environ.get("SFTKIT_DATA_CACHE") or cache_dir() / "encoded")


def writable() -> bool:
    """Whether the cache folder exists (or can be made) and can be written."""
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(root, os.W_OK)


# -- the key -----------------------------------------------------------------------------------------

def file_digest(path: str | Path) -> str:
    """xxh3-128 of a file's bytes (of every file, with its relative name, for a folder)."""
    import xxhash

    path = Path(path)
    digest = xxhash.xxh3_128()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else "").encode("utf-8") + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """A hash of what decides a tokenizer's output: its serialisation, tokens, chat template."""
    import xxhash

    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    extra = json.dumps({"class": type(tokenizer).__name__, "size": len(tokenizer),
                        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
                        "chat_template": getattr(tokenizer, "chat_template", None)}, sort_keys=True, default=str)
    return xxhash.xxh3_128((body + extra).encode("utf-8")).hexdigest()


def data_key(prepared: Any) -> str:
    """The cache key of a prepared training file (see the module docstring)."""
    import xxhash

    from sftkit import __version__

    request, render = prepared.data.request, prepared.render
    fingerprint = {
        "format": FORMAT, "sftkit": __version__, "file": file_digest(request.path),
        "read": {"loader": request.loader, "loader_options": dict(request.loader_options),
                 "columns": dict(request.columns), "instruction": request.instruction,
                 "skip_invalid": request.skip_invalid},
        "spec": prepared.spec.to_dict(),
        "template": prepared.template_name, "template_options": dict(render.template_options),
        "masking": prepared.masking_name, "masking_options": dict(render.masking_options),
        "max_length": prepared.encoder.max_length, "added_tokens": list(prepared.added_tokens),
        "tokenizer": tokenizer_digest(prepared.tokenizer),
    }
    encoder = prepared.encoder
    if encoder.encoder_decoder:  # another split of the same text: an encoder input and a decoder target
        fingerprint["encoder_decoder"] = {"source": encoder.source_limit, "target": encoder.target_limit}
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return xxhash.xxh3_128(text.encode("utf-8")).hexdigest()


# -- compact encodings -------------------------------------------------------------------------------

@dataclass
class Block:
    """Consecutive samples as flat arrays: values and row offsets per column, plus counts."""

    values: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]  # [rows + 1] per column (int64 in memory, int32 in the Arrow file)
    rows: int  # encoded rows, including those dropped for having no trained token
    truncated: int

    @property
    def kept(self) -> int:
        return len(self.offsets["input_ids"]) - 1


def block_of(tokenized: Iterable[Any]) -> Block:
    """The samples of encoded rows (``TokenizedExample``), rows with no trained token dropped."""
    samples, rows, truncated = [], 0, 0
    for tok in tokenized:
        rows += 1
        truncated += bool(tok.truncated)
        sample = to_sample(tok)
        if len(sample.target):
            samples.append(sample)
    values, offsets = {}, {}
    for column, dtype in zip(COLUMNS, (np.int32, np.int32, np.int32, np.float32)):
        parts = [getattr(s, column) for s in samples]
        offsets[column] = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
        values[column] = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)
    return Block(values, offsets, rows, truncated)


class EncodedSet(Sequence[Sample]):
    """Samples held as flat arrays in chunks (memory-mapped Arrow buffers, or blocks in memory);
    ``set[i]`` builds the Sample of row ``i`` as zero-copy views."""

    def __init__(self, chunks: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]], dataset: Any = None):
        self._chunks = chunks  # (values, offsets) per chunk
        sizes = [len(offsets["input_ids"]) - 1 for _, offsets in chunks]
        self._starts = list(np.cumsum([0] + sizes)[:-1])
        self._size = int(sum(sizes))
        self._dataset = dataset  # keeps the memory map open

    @classmethod
    def from_blocks(cls, blocks: list[Block]) -> "EncodedSet":
        return cls([(b.values, b.offsets) for b in blocks if b.kept])

    @classmethod
    def from_arrow(cls, path: Path) -> "EncodedSet":
        """Memory-map a cache file written by ``write_cache``."""
        from datasets import Dataset

        dataset = Dataset.from_file(str(path), in_memory=False)
        table = dataset.data.table
        chunks = []
        for index in range(table.column("input_ids").num_chunks):
            values, offsets = {}, {}
            for column in COLUMNS:
                array = table.column(column).chunk(index)
                offsets[column] = array.offsets.to_numpy(zero_copy_only=True)  # int32, in the map too
                values[column] = array.values.to_numpy(zero_copy_only=True)
            chunks.append((values, offsets))
        return cls(chunks, dataset)

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        if index < 0:
            index += self._size
        if not 0 <= index < self._size:
            raise IndexError(index)
        chunk = bisect_right(self._starts, index) - 1
        values, offsets = self._chunks[chunk]
        row = index - self._starts[chunk]
        parts = [values[c][offsets[c][row]:offsets[c][row + 1]] for c in COLUMNS]
        return Sample(*parts)

    def lengths(self) -> np.ndarray:
        """Token count of every sample (int64)."""
        return np.concatenate([np.diff(o["input_ids"]) for _, o in self._chunks]) if self._chunks else np.zeros(0, int)

    def trained(self) -> int:
        return int(sum(o["target"][-1] for _, o in self._chunks))

    def nbytes(self) -> int:
        """Bytes of the sample arrays (on disk for a memory map)."""
        return int(sum(v.nbytes + o.nbytes for values, offsets in self._chunks
                       for v, o in zip(values.values(), offsets.values())))


# -- reading and writing the cache -------------------------------------------------------------------

def open_cache(key: str) -> tuple[EncodedSet, dict] | None:
    """The cached samples and their meta data for ``key``, or None."""
    folder = cache_root() / key
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text("utf-8"))
        if meta.get("format") != FORMAT:
            return None
        return EncodedSet.from_arrow(folder / DATA_FILE), meta
    except (OSError, ValueError, KeyError):
        return None


def write_cache(key: str, blocks: Iterable[Block], meta: Callable[[], dict]) -> Path:
    """Write blocks into ``<root>/<key>`` (temp folder, then rename); returns the folder.

    ``meta()`` is called once every block is written (the skipped lines are known only after
    the whole file was read); the row counts are added to it."""
    import pyarrow as pa
    from datasets import Features, List, Value
    from datasets.arrow_writer import ArrowWriter

    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    tmp = root / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    features = Features({c: List(Value("float32" if c == "weight" else "int32")) for c in COLUMNS})
    writer = ArrowWriter(features=features, path=str(tmp / DATA_FILE))
    counts = {"rows": 0, "truncated": 0, "used": 0}
    try:
        for block in blocks:
            counts["rows"] += block.rows
            counts["truncated"] += block.truncated
            counts["used"] += block.kept
            if block.kept:
                arrays = [pa.ListArray.from_arrays(pa.array(block.offsets[c].astype(np.int32)),
                                                   pa.array(block.values[c])) for c in COLUMNS]
                writer.write_table(pa.Table.from_arrays(arrays, names=list(COLUMNS)))
        writer.finalize()
        (tmp / META_FILE).write_text(json.dumps({"format": FORMAT, "key": key, **meta(), **counts}), "utf-8")
        try:
            os.rename(tmp, final)
        except OSError:  # another run wrote the same key meanwhile: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# -- encoding in worker processes --------------------------------------------------------------------

_WORKER_ENCODER: Any = None  # the encoder a forked worker inherits


def _encode_in_worker(examples: list) -> Block:
    return block_of(row.tokens for row in _WORKER_ENCODER.encode_rows(examples))


def chunks_of(examples: Iterable[Any], size: int | None = None) -> Iterator[list]:
    iterator = iter(examples)
    size = size or CHUNK_ROWS
    while chunk := list(islice(iterator, size)):
        yield chunk


def default_workers() -> int:
    """One tokenizing process per CPU core this process may use, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def encode_blocks(examples: Iterable[Any], encoder: Any, num_proc: int | None) -> Iterator[Block]:
    """Blocks of compact samples for ``examples``, in order, one per chunk of ``CHUNK_ROWS`` rows.

    With more than one worker and at least two chunks, the chunks are encoded by a pool of
    forked processes (each inherits the encoder; the main process reads the rows, keeps at
    most two chunks per worker in flight, and hands the blocks on in order); otherwise in
    this process.
    """
    global _WORKER_ENCODER
    import multiprocessing

    workers = num_proc if num_proc is not None else default_workers()
    chunks = chunks_of(examples)
    head = list(islice(chunks, 2))
    if workers <= 1 or len(head) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for chunk in chain(head, chunks):
            yield block_of(row.tokens for row in encoder.encode_rows(chunk))
        return
    _WORKER_ENCODER = encoder
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker (and no fork warning)
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            pending: deque = deque()
            for chunk in chain(head, chunks):
                pending.append(pool.apply_async(_encode_in_worker, (chunk,)))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()
    finally:
        _WORKER_ENCODER = None
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
