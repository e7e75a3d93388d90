"""Property tests: arbitrary values for every recipe key and every component option, through the CLI.

Whatever the value (NaN, infinity, huge or negative numbers, empty text, control characters,
lists, nested mappings, the wrong type), from a recipe or spec file or from a flag, the
command exits 0, 1 or 2 with one message: never 3 (an internal error), never a traceback.
Values that are accepted run the command for real (a one-step training of ``tiny-random``,
a validation, a preview); the metric test replaces only the model's generation by a fixed
one (it is about metric options: ``tests/test_eval_cli.py`` runs real models).
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sftkit.testing import fresh_registry, run_cli

HERE = Path(__file__).resolve().parent
ROWS = [json.loads(line) for line in (HERE / "data" / "train" / "qa.jsonl").read_text("utf-8").splitlines()[:4]]
# SFTKIT_PROPERTY_SCALE=10 runs ten times as many examples (a longer hunt; the default keeps the file near a minute)
SCALE = float(os.environ.get("SFTKIT_PROPERTY_SCALE", "1"))
EXAMPLES = settings(max_examples=int(60 * SCALE), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- arbitrary values -------------------------------------------------------------------------------
TEXT = st.text(max_size=12)  # any code point but surrogates: control characters, bidi, escapes
SPECIAL_TEXT = st.sampled_from(["", " ", "nan", "NaN", "inf", "-inf", "1e400", "-1", "0", "1", "2.5", "1e-4",
                                "true", "no", "a,b", ",", "\x00", "\x1b[2J", "\u202e", "9" * 30, "-0", "{", "(",
                                "{output}", "{nope}", "q_proj", "macro", "char", "strict", "regex", ";"])
NUMBERS = st.one_of(st.integers(), st.integers(-2**80, 2**80), st.floats(),
                    st.sampled_from([0, 1, -1, 0.0, 1.0, 0.5, 2**31, 2**32, 2**63, 10**30, float("nan"),
                                     float("inf"), -float("inf"), 1e-320, 1e300]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, SPECIAL_TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                      max_leaves=5)


def allowed_values(schema: dict) -> st.SearchStrategy:
    """Values a JSON Schema allows (bounds included, numbers near the low bound), so that about
    half of the examples run the command through with a legal but extreme value."""
    from sftkit.options import branches

    found = []
    for branch in branches(schema, schema.get("$defs", {})):
        kind = branch.get("type")
        if "enum" in branch:
            found.append(st.sampled_from(branch["enum"]))
        elif kind == "integer":
            low = branch.get("minimum", branch.get("exclusiveMinimum", -2**40 - 1) + 1)
            high = branch.get("maximum", branch.get("exclusiveMaximum", 2**40 + 1) - 1)
            found.append(st.one_of(st.sampled_from([low, high]), st.integers(low, min(high, low + 64))))
        elif kind == "number":
            found.append(st.floats(min_value=branch.get("minimum", branch.get("exclusiveMinimum")),
                                   max_value=branch.get("maximum", branch.get("exclusiveMaximum")),
                                   exclude_min="exclusiveMinimum" in branch, exclude_max="exclusiveMaximum" in branch,
                                   allow_nan=False, allow_infinity=False))
        elif kind == "boolean":
            found.append(st.booleans())
        elif kind == "string":
            found.append(st.one_of(TEXT, SPECIAL_TEXT).filter(lambda t, b=branch: b.get("minLength", 0) <= len(t)
                                                              <= b.get("maxLength", 10**9)))
        elif kind == "array":
            found.append(st.lists(allowed_values(branch.get("items") or {}), min_size=branch.get("minItems", 0),
                                  max_size=3))
        elif kind == "null":
            found.append(st.none())
        else:
            found.append(VALUES)
    return st.one_of(found)


def any_value(schema: dict, allowed_share: int = 2) -> st.SearchStrategy:
    """An arbitrary value, or (one time in ``allowed_share``) one the schema allows."""
    return st.one_of([VALUES] * (allowed_share - 1) + [allowed_values(schema)])


def as_text(value) -> str:
    """A value as a user would type it after ``KEY=``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(as_text(v) for v in value)
    return "" if value is None else str(value)


def assert_clean_exit(result, context) -> None:
    output = result.stdout + result.stderr
    event(f"exit {result.exit_code}")  # --hypothesis-show-statistics: how many values ran the command through
    assert result.exit_code in (0, 1, 2), (context, result.exit_code, output[-3000:])
    assert "Traceback" not in output and "internal error" not in output, (context, output[-3000:])
    if result.exit_code == 2:
        assert "rror:" in result.stderr, (context, output[-3000:])  # one message (ours, or click's "Error:")


@contextmanager
def inside(folder: Path):
    """Run in ``folder`` (a relative run folder or report lands there, never in the repository)."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Data files for every built-in loader (four Alpaca rows each) and an eval file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("values")
    rows = [{"instruction": r["instruction"], "input": r.get("input", ""), "output": r["output"]} for r in ROWS]
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    (root / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]), "utf-8")
    (root / "d.json").write_text(json.dumps(rows), "utf-8")
    for suffix, sep in ((".csv", ","), (".tsv", "\t")):
        lines = [sep.join(rows[0])] + [sep.join(str(v).replace(sep, " ").replace("\n", " ").replace('"', "'")
                                                for v in r.values()) for r in rows]
        (root / f"d{suffix}").write_text("\n".join(lines) + "\n", "utf-8")
    pq.write_table(pa.Table.from_pylist(rows), root / "d.parquet")
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(root / "d_hf"))
    return root


LOADER_DATA = {"json": "d.json", "jsonl": "d.jsonl", "csv": "d.csv", "tsv": "d.tsv", "parquet": "d.parquet",
               "hf_disk": "d_hf"}


def _case(workspace: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=workspace))


# -- recipes --------------------------------------------------------------------------------------------

def _train_flags() -> dict:
    from sftkit.cli import cli

    return {p.name: p for p in cli.get_command(None, "train").params}


RECIPE_KEYS = sorted(f for f in __import__("sftkit.recipe", fromlist=["KEYS"]).KEYS)
# keys set by flags in every run (flags win over the recipe: the file's value is still checked first)
BASE_FLAGS = ("data", "model", "validate", "max_steps", "output_dir")
# keys never given as a flag here: a valid value would train for long or write outside the case folder
NOT_AS_FLAG = ("max_steps", "epochs", "output_dir")


def _recipe_schema(key: str) -> dict:
    from sftkit.recipe import declarations

    return {} if key == "data" else declarations()[key].schema


@st.composite
def recipe_values(draw):
    key = draw(st.sampled_from(RECIPE_KEYS))
    return key, draw(any_value(_recipe_schema(key), allowed_share=3))


# fewer examples: an accepted value trains tiny-random for a step (seconds; the other tests' runs take less)
@settings(EXAMPLES, max_examples=int(30 * SCALE))
@given(setting=recipe_values(), as_flag=st.booleans())
def test_any_recipe_value_exits_0_1_or_2(workspace, setting, as_flag):
    key, value = setting
    case = _case(workspace)
    flags = _train_flags()
    param = flags.get(key)
    by_flag = (as_flag and param is not None and not getattr(param, "is_flag", False) and key not in NOT_AS_FLAG
               and not isinstance(value, (dict, type(None))))
    base = {"data": ["--data", workspace / "d.jsonl"], "model": ["--model", "tiny-random"],
            "validate": ["--no-validate"], "max_steps": ["--max-steps", "1"], "output_dir": ["--output-dir", case / "run"]}
    args = ["train"]
    if by_flag:
        base.pop(key, None)
        args += [param.opts[0], as_text(value)]
    else:
        recipe = case / "recipe.yaml"
        recipe.write_text(yaml.safe_dump({key: value}, allow_unicode=True), "utf-8")
        args.append(recipe)
    for extra in base.values():
        args += extra
    with inside(case):
        result = run_cli(*args)
    assert_clean_exit(result, (key, value, by_flag))


# -- component options ------------------------------------------------------------------------------

def _targets(*kinds: str) -> list[tuple[str, str, str]]:
    registry = fresh_registry()
    return [(kind, name, option) for kind in kinds for name, comp in sorted(registry.components(kind).items())
            for option in comp.declared_options]


def _option_args(kind: str, name: str, option: str, value, by_text: bool, case: Path, workspace: Path) -> list:
    """The validate or preview command that sets one option of one component (by flag or by spec)."""
    spec = {"format": "alpaca"}
    if kind == "loaders":
        data = workspace / LOADER_DATA[name]
        args = ["validate", data, "--no-tokenizer", "--only", "schema"]
        if by_text:
            args += ["--loader", name, "--loader-option", f"{option}={as_text(value)}"]
        else:
            spec.update(loader=name, loader_options={option: value})
    elif kind == "validators":
        args = ["validate", workspace / "d.jsonl", "--only", name]
        args += ["--model", "tiny-random"] if name == "tokenization" else ["--no-tokenizer"]
        if name == "leakage":
            args += ["--eval-data", workspace / "e.jsonl"]
        if by_text:
            args += ["--validator-option", f"{name}.{option}={as_text(value)}"]
        else:
            spec["validators"] = {name: {option: value}}
    else:  # templates and masking strategies: preview renders, masks and tokenizes the rows
        flag = {"templates": "--template", "masking_strategies": "--masking"}[kind]
        args = ["preview", workspace / "d.jsonl", "--model", "tiny-random", "-n", "2", "--format", "plain",
                flag, name, f"{flag}-option", f"{option}={as_text(value)}"]
    spec_path = case / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, allow_unicode=True), "utf-8")
    args += ["--spec", spec_path]
    if args[0] == "validate":
        args += ["--report-dir", case / "reports"]
    return args


def _option_schema(kind: str, name: str, option: str) -> dict:
    return fresh_registry().get(kind, name).declared_options[option].schema


@st.composite
def option_values(draw, *kinds: str):
    target = draw(st.sampled_from(_targets(*kinds)))
    return target, draw(any_value(_option_schema(*target)))


@EXAMPLES
@given(setting=option_values("loaders", "validators", "templates", "masking_strategies"), by_text=st.booleans())
def test_any_option_value_exits_0_1_or_2(workspace, setting, by_text):
    (kind, name, option), value = setting
    case = _case(workspace)
    with inside(case):
        result = run_cli(*_option_args(kind, name, option, value, by_text, case, workspace))
    assert_clean_exit(result, (kind, name, option, value, by_text))


@pytest.fixture
def fixed_generation(monkeypatch):
    """Generation replaced by fixed outputs (the references of even rows, odd text otherwise)."""
    from sftkit.eval import engine
    from sftkit.eval.scoring import ModelRun
    from sftkit.generate import Generation

    def generate_with(role, name, examples, encoder, prompts=None, **_):
        prompts = prompts or [encoder.prompt(example) for example in examples]
        texts = [e.response_text() if i % 2 == 0 else "\x1b[2J 42 ünïcode" for i, e in enumerate(examples)]
        generations = [Generation(text, len(text.split()), "eos") for text in texts]
        return ModelRun(role, name, None, texts, generations, 0.0), prompts

    monkeypatch.setattr(engine, "generate_with", generate_with)


@EXAMPLES
@given(setting=option_values("metrics"))
def test_any_metric_option_value_exits_0_1_or_2(workspace, fixed_generation, setting):
    (_kind, name, option), value = setting
    target = (name, option)
    case = _case(workspace)
    with inside(case):
        result = run_cli("eval", "--model", "tiny-random", "--data", workspace / "d.jsonl", "--no-compare",
                         "--resamples", "100", "--metrics", name, "--metric-option", f"{name}.{option}={as_text(value)}",
                         "--report-dir", case / "reports")
    assert_clean_exit(result, (target, value))
