"""Cut the summarization demo's data out of ../shared/data/dialogsum.dev.jsonl (DialogSum dev split).

Keeps the dialogues of at most 150 words (shorter dialogues keep a CPU demo within minutes)
whose text occurs once in the file (the dev split repeats a few dialogues, with different
summaries: a repeat across the splits would be leakage), shuffles them with seed 11 and writes the first 50 as ``demo/dialogsum/test.jsonl``
and the rest (297, at most 300) as ``train.jsonl``, records unchanged ({fname, dialogue, summary, topic}).
The files are committed; this script regenerates them identically:

    python demo/make_dialogsum_subset.py [PATH/TO/dialogsum.dev.jsonl]
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "shared" / "data" / "dialogsum.dev.jsonl"
MAX_WORDS, TEST_ROWS, TRAIN_ROWS, SEED = 150, 50, 300, 11


def main(source: Path) -> None:
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [" ".join(json.loads(line)["dialogue"].split()) for line in lines]
    once = {text for text in texts if texts.count(text) == 1}
    kept = [line for line, text in zip(lines, texts) if text in once and len(text.split()) <= MAX_WORDS]
    random.Random(SEED).shuffle(kept)
    out = HERE / "dialogsum"
    out.mkdir(exist_ok=True)
    (out / "test.jsonl").write_text("".join(line + "\n" for line in kept[:TEST_ROWS]), encoding="utf-8")
    (out / "train.jsonl").write_text("".join(line + "\n" for line in kept[TEST_ROWS:TEST_ROWS + TRAIN_ROWS]),
                                     encoding="utf-8")
    print(f"{len(lines)} dialogues, {len(kept)} of at most {MAX_WORDS} words "
          f"(each occurring once): {TEST_ROWS} test, {min(TRAIN_ROWS, len(kept) - TEST_ROWS)} train")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else SOURCE)
