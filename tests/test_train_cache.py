"""The Arrow cache of encoded training data: int32 columns, memory-mapped, keyed on what decides
the tokens, reused by the next run (which then tokenizes nothing), and the same samples whether
encoded in worker processes, from validation's encodings, or read back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "train"
SPEC = HERE.parent / "demo" / "financial_sentiment" / "spec.yaml"
SENTIMENT = DATA / "sentiment.jsonl"
QA = DATA / "qa.jsonl"


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "encoded"
    monkeypatch.setenv("SFTKIT_DATA_CACHE", str(root))
    return root


def _recipe(**extra):
    from sftkit.recipe import build_recipe

    settings = {"data": [str(SENTIMENT)], "spec": str(SPEC), "model": "tiny-random"}
    settings.update(extra)
    return build_recipe(None, settings)


def _reference(recipe) -> list[tuple]:
    """The samples of the first source, encoded directly by the pipeline (no cache involved)."""
    from sftkit.pipeline import prepare
    from sftkit.train.data import to_sample

    prepared = prepare(recipe.data_request(recipe.data[0]), recipe.rendering)
    out = []
    for tok in prepared.encoder.encode_many(prepared.examples()):
        s = to_sample(tok)
        if len(s.target):
            out.append(tuple(a.tolist() for a in (s.input_ids, s.source, s.target, s.weight)))
    return out


def _as_tuples(samples) -> list[tuple]:
    return [tuple(np.asarray(a).tolist() for a in (s.input_ids, s.source, s.target, s.weight)) for s in samples]


class CountingTokenizer:
    """Counts the texts a tokenizer encodes with offsets (the full training texts)."""

    def __init__(self, monkeypatch):
        import sftkit.models

        self.texts: list[str] = []
        real = sftkit.models.load_tokenizer

        def load(name, **kwargs):
            tokenizer = real(name, **kwargs)
            parent, texts = type(tokenizer), self.texts

            def call(self_, text, *args, **kw):
                if kw.get("return_offsets_mapping"):
                    texts.extend([text] if isinstance(text, str) else list(text))
                return parent.__call__(self_, text, *args, **kw)

            tokenizer.__class__ = type("Counting" + parent.__name__, (parent,), {"__call__": call})
            return tokenizer

        monkeypatch.setattr(sftkit.models, "load_tokenizer", load)


def test_cache_is_written_once_and_reused_without_tokenizing(cache_root, monkeypatch):
    from sftkit.train.sources import load_training_data

    counter = CountingTokenizer(monkeypatch)
    recipe = _recipe(eval_data=str(DATA / "sentiment_eval.jsonl"))
    first = load_training_data(recipe, validate=True)
    rows = sum(1 for p in (SENTIMENT, DATA / "sentiment_eval.jsonl") for line in p.read_text().splitlines() if line)
    assert len(counter.texts) == rows  # validation's encodings were used, each row tokenized once
    folders = sorted(p.name for p in cache_root.iterdir())
    assert len(folders) == 2 and not any(name.startswith(".tmp") for name in folders)  # train file + eval file
    counter.texts.clear()
    second = load_training_data(recipe, validate=False)  # the same key, no validation: read, not tokenized
    assert counter.texts == []
    assert _as_tuples(second.sources[0].samples) == _as_tuples(first.sources[0].samples) == _reference(recipe)
    assert _as_tuples(second.eval_samples) == _as_tuples(first.eval_samples)
    assert second.sources[0].stats == first.sources[0].stats and second.eval_stats == first.eval_stats
    assert sorted(p.name for p in cache_root.iterdir()) == folders  # nothing new written


def test_cache_files_are_int32_arrow_read_through_a_memory_map(cache_root):
    import pyarrow as pa
    from datasets import Dataset

    from sftkit.train.sources import load_training_data

    data = load_training_data(_recipe(), validate=False)
    (folder,) = list(cache_root.iterdir())
    schema = Dataset.from_file(str(folder / "data.arrow")).data.schema
    assert {f.name: f.type for f in schema} == {
        "input_ids": pa.list_(pa.int32()), "source": pa.list_(pa.int32()),
        "target": pa.list_(pa.int32()), "weight": pa.list_(pa.float32())}
    sample = data.sources[0].samples[0]
    assert sample.input_ids.dtype == np.int32 and not sample.input_ids.flags.owndata  # a view into the map
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["rows"] == 24 and meta["used"] == len(data.sources[0].samples)


@pytest.mark.parametrize("change", [{"max_length": 85}, {"template": "chatml"}, {"masking": "full"}])
def test_what_decides_the_tokens_changes_the_key(cache_root, change):
    from sftkit.train.sources import load_training_data

    load_training_data(_recipe(), validate=False)
    changed = load_training_data(_recipe(**change), validate=False)
    assert len(list(cache_root.iterdir())) == 2
    assert _as_tuples(changed.sources[0].samples) == _reference(_recipe(**change))


def test_a_changed_file_gets_a_new_key(cache_root, tmp_path):
    from sftkit.train.sources import load_training_data

    copy = tmp_path / "sentiment.jsonl"
    copy.write_text(SENTIMENT.read_text())
    load_training_data(_recipe(data=[str(copy)]), validate=False)
    lines = copy.read_text().splitlines()
    copy.write_text("\n".join(lines[:-1]) + "\n")
    shorter = load_training_data(_recipe(data=[str(copy)]), validate=False)
    assert len(list(cache_root.iterdir())) == 2 and shorter.sources[0].stats["rows"] == 23


def test_worker_processes_encode_the_same_samples(cache_root, monkeypatch, tmp_path):
    """Chunks of 4 rows (24 rows: 6 chunks) through 2 forked workers equal one process's encoding."""
    import os

    import sftkit.train.cache as cache
    from sftkit.train.sources import load_training_data

    monkeypatch.setattr(cache, "CHUNK_ROWS", 4)
    pids = tmp_path / "pids"
    real = cache.block_of

    def recording(tokenized):
        with open(pids, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return real(tokenized)

    monkeypatch.setattr(cache, "block_of", recording)  # inherited by the forked workers
    parallel = load_training_data(_recipe(num_proc=2, data_cache=False), validate=False)
    workers = pids.read_text().split()
    assert len(workers) == 6 and str(os.getpid()) not in workers and 1 <= len(set(workers)) <= 2
    single = load_training_data(_recipe(num_proc=1, data_cache=False), validate=False)
    assert _as_tuples(parallel.sources[0].samples) == _as_tuples(single.sources[0].samples) == _reference(_recipe())
    assert len(parallel.sources[0].samples._chunks) == 6  # one block per chunk, in order
    assert not cache_root.exists()  # data_cache false: nothing written


def test_train_twice_with_no_validate_tokenizes_once(cache_root, monkeypatch, run_cli, tmp_path):
    counter = CountingTokenizer(monkeypatch)
    args = ["train", "--data", QA, "--model", "tiny-random", "--max-steps", "1", "--no-validate"]
    assert run_cli(*args, "--output-dir", tmp_path / "a").exit_code == 0
    assert len(counter.texts) == 12
    counter.texts.clear()
    result = run_cli(*args, "--output-dir", tmp_path / "b")
    assert result.exit_code == 0, result.stderr
    assert counter.texts == []
    a, b = (json.loads((tmp_path / r / "metrics.jsonl").read_text().splitlines()[0]) for r in "ab")
    assert a["loss"] == b["loss"] and a["trained_tokens"] == b["trained_tokens"]
