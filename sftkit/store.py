"""The examples of one dataset, held in chunks: what validate and train walk through.

Examples are kept in chunks of ``CHUNK_ROWS``; every chunk but the one in use is held
pickled (compact bytes), so validators can walk the data several times without keeping a
million Python objects alive. A store made for training also keeps each chunk's encoding
(``encodings``), so the rows that validation tokenized are the rows that train.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from sftkit.types import Example

CHUNK_ROWS = 4096


@dataclass
class Chunk:
    """A run of consecutive rows: examples, their mapped canonical fields, their record shapes."""

    start: int
    examples: list[Example]
    records: list[dict]  # canonical field -> raw value, as the spec mapped it (for the schema validator)
    shapes: list[str]  # one short signature per record: its keys (and its turns' keys)


class ExampleStore:
    """Examples in chunks; every chunk but the last one used is kept pickled.

    ``encodings`` is None (nothing kept: validate alone, where memory must not grow with the
    rows) or a dict from a chunk's first row to its encoded rows (``sftkit.pipeline.encode_chunk``).
    """

    def __init__(self, chunk_rows: int = CHUNK_ROWS, *, keep_encodings: bool = False):
        self.chunk_rows = chunk_rows
        self._frozen: list[bytes] = []
        self._open = Chunk(0, [], [], [])
        self._cache: tuple[int, Chunk] | None = None
        self.rows = 0
        self.encodings: dict[int, list[Any]] | None = {} if keep_encodings else None

    def add(self, example: Example, record: dict, shape: str) -> None:
        """Append one row (rows must arrive in order)."""
        self._open.examples.append(example)
        self._open.records.append(record)
        self._open.shapes.append(shape)
        self.rows += 1
        if len(self._open.examples) >= self.chunk_rows:
            self._frozen.append(pickle.dumps(self._open, protocol=pickle.HIGHEST_PROTOCOL))
            self._open = Chunk(self.rows, [], [], [])

    def __len__(self) -> int:
        return self.rows

    def _chunk(self, index: int) -> Chunk:
        if index == len(self._frozen):
            return self._open
        if self._cache is None or self._cache[0] != index:
            # Safe: these bytes were pickled by this process in add(); nothing is read from disk.
            self._cache = (index, pickle.loads(self._frozen[index]))
        return self._cache[1]

    def chunks(self) -> Iterator[Chunk]:
        """Every chunk in row order."""
        for index in range(len(self._frozen) + 1):
            chunk = self._chunk(index)
            if chunk.examples:
                yield chunk

    def __iter__(self) -> Iterator[Example]:
        for chunk in self.chunks():
            yield from chunk.examples

    def get(self, row: int) -> Example:
        """The example of one row (0-based)."""
        if not 0 <= row < self.rows:
            raise IndexError(row)
        chunk = self._chunk(row // self.chunk_rows)
        return chunk.examples[row - chunk.start]

    def memory_bytes(self) -> int:
        """Bytes held by the pickled chunks (the open chunk not counted)."""
        return sum(len(b) for b in self._frozen)


def record_shape(record: dict, cache: dict[str, str]) -> str:
    """A short signature of a record's layout: its keys, and for conversations the keys of a
    turn and the role names used (a system turn or not does not count)."""
    keys = ",".join(sorted(map(str, record)))
    for value in record.values():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            keys += "|turns:" + ",".join(sorted(map(str, value[0])))
            roles = {str(t.get("role", t.get("from"))) for t in value if isinstance(t, dict)} - {"system"}
            keys += "|roles:" + "/".join(sorted(roles))
            break
    return cache.setdefault(keys, keys)


def load_store(records: Iterable[dict], spec: Any, chunk_rows: int = CHUNK_ROWS, *,
               keep_encodings: bool = False) -> ExampleStore:
    """Map raw records to Examples (row numbers from 0) into a chunked store."""
    store = ExampleStore(chunk_rows, keep_encodings=keep_encodings)
    shapes: dict[str, str] = {}
    for row, record in enumerate(records):
        store.add(spec.to_example(record, row), spec.map_record(record), record_shape(record, shapes))
    return store
