"""Every user-given value checked once, by value as well as type, before any work starts.

``sftkit.options`` (pydantic) for component options and recipe keys: the messages name the
component and its plugin (or the file and key, or the flag), the value and what is allowed;
the built-ins declare their constraints, a third-party plugin's ``Annotated`` options get the
same checks; ``--severity`` codes and ``preview --start`` are checked too.
"""
from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest

from sftkit import UsageError
from sftkit.options import CommandLineText, Declared, default_problems
from sftkit.testing import fresh_registry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QA = HERE / "data" / "train" / "qa.jsonl"
SENTIMENT = HERE / "data" / "train" / "sentiment.jsonl"
SPEC = ROOT / "demo" / "financial_sentiment" / "spec.yaml"


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def registry():
    return fresh_registry()


def refusal(registry, kind: str, name: str, options: dict, **sources) -> UsageError:
    with pytest.raises(UsageError) as caught:
        registry.get(kind, name).bind(options, sources=sources or None)
    return caught.value


def cli(flag: str, item: str) -> CommandLineText:
    """An option value as the command line hands it over (text that remembers its flag)."""
    return CommandLineText(item.split("=", 1)[1], f"{flag} {item}")


# -- the messages ---------------------------------------------------------------------------------

def test_a_refused_option_names_component_plugin_option_value_allowed_and_source(registry):
    error = refusal(registry, "validators", "quality", {"num_perm": cli("--validator-option", "quality.num_perm=0")})
    assert error.message == ("validator 'quality' (plugin validators): option num_perm must be at least 1, got 0 "
                             "(from --validator-option quality.num_perm=0)")
    assert error.hint == ("pass --validator-option quality.num_perm=VALUE, or set it in the spec's validators:; "
                          "num_perm: MinHash permutations per text (more: finer similarity, more memory)")
    error = refusal(registry, "validators", "quality", {"num_perm": 5000},
                    num_perm="the spec s.yaml, key validators.quality.num_perm")
    assert error.message.endswith("option num_perm must be at most 4096, got 5000 (from the spec s.yaml, key "
                                  "validators.quality.num_perm)")


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e400", "high", ""])
def test_numbers_must_be_finite_and_of_the_right_kind(registry, text):
    error = refusal(registry, "validators", "quality", {"near_dup_threshold": cli("--validator-option",
                                                                                  f"quality.near_dup_threshold={text}")})
    assert "option near_dup_threshold must be a number more than 0 and at most 1, got" in error.message


@pytest.mark.parametrize("kind, name, options, fragment", [
    ("validators", "balance", {"max_share": 0}, "option max_share must be more than 0, got 0"),
    ("validators", "balance", {"max_ratio": 0.5}, "option max_ratio must be at least 1, got 0.5"),
    ("validators", "balance", {"min_rows": -1}, "option min_rows must be at least 0, got -1"),
    ("validators", "quality", {"shingle_size": True}, "option shingle_size must be an integer from 1 to 64, got True"),
    ("validators", "quality", {"pii": 1}, "option pii must be true or false, got 1"),
    ("validators", "quality", {"max_repeat_fraction": 1.5}, "option max_repeat_fraction must be at most 1, got 1.5"),
    ("validators", "leakage", {"near_dup_threshold": 0}, "option near_dup_threshold must be more than 0, got 0"),
    ("validators", "tokenization", {"samples": [3]}, "option samples must be an integer from 0 to 100, got [3]"),
    ("metrics", "rouge", {"tokenizer": "klingon"}, "option tokenizer must be one of default, whitespace, char, got "
                                                   "'klingon'"),
    ("metrics", "bleu", {"tokenize": "13b"}, "option tokenize must be one of 13a, none, zh, intl, char"),
    ("metrics", "exact_match", {"mode": "fuzzy"}, "option mode must be one of strict, normalised, regex"),
    ("metrics", "exact_match", {"pattern": "("}, "option pattern must be a regular expression (missing ), "
                                                 "unterminated subpattern at position 0), got '('"),
    ("metrics", "f1", {"average": cli("--metric-option", "f1.average=macro,binary")},
     "option average must be a non-empty list of macro, weighted, micro, got 'macro,binary'"),
    ("metrics", "f1", {"average": []}, "option average must be a non-empty list of macro, weighted, micro, got []"),
    ("masking_strategies", "prompt_weighted", {"prompt_weight": 1.5}, "option prompt_weight must be at most 1, got 1.5"),
    ("templates", "custom", {"prompt": "{nope}"}, "option prompt must be a template string whose fields are among "
                                                  "{instruction}, {input}, {output}, {system}, {prompt}, {eos}, "
                                                  "{bos} (not {nope})"),
    ("templates", "custom", {"end": "{eos"}, "option end must be a template string with balanced braces"),
    ("loaders", "csv", {"delimiter": ";;"}, "option delimiter must be exactly one character (e.g. ',' or ';'; tabs: "
                                            "the tsv loader), got ';;'"),
    ("loaders", "parquet", {"batch_size": 2**30}, "option batch_size must be at most 16777216"),
    ("loaders", "jsonl", {"max_line_bytes": 10**30}, "option max_line_bytes must be at most 17179869184"),
])
def test_builtin_options_are_declared_by_value(registry, kind, name, options, fragment):
    assert fragment in refusal(registry, kind, name, options).message


def test_accepted_values_are_coerced_from_text_and_typed_values_keep_their_type(registry):
    def bound(kind, name, options):
        return registry.get(kind, name).bind(options).options

    assert bound("validators", "quality", {"num_perm": cli("--validator-option", "quality.num_perm=64"),
                                           "pii": cli("--validator-option", "quality.pii=no")}) == {
        "num_perm": 64, "pii": False}
    assert bound("metrics", "f1", {"average": cli("--metric-option", "f1.average=micro, macro")}) == {
        "average": ["micro", "macro"]}
    assert bound("validators", "balance", {"max_ratio": 4, "min_rows": "7"}) == {"max_ratio": 4.0, "min_rows": 7}
    assert bound("validators", "quality", {"near_duplicates": "off"}) == {"near_duplicates": False}
    kept = bound("templates", "custom", {"prompt": cli("--template-option", "prompt=Q: {instruction}\n")})
    assert kept == {"prompt": "Q: {instruction}\n"} and type(kept["prompt"]) is str  # plain text once checked


def test_every_builtin_option_has_a_description_and_a_default_its_declaration_accepts(registry):
    for kind in ("loaders", "templates", "masking_strategies", "validators", "metrics"):
        for name, component in registry.components(kind).items():
            for option, declared in component.declared_options.items():
                assert declared.declared, f"{kind} {name}: option {option} has no annotation"
                assert declared.description, f"{kind} {name}: option {option} has no description"
            assert default_problems(component.declared_options) == [], (kind, name)


def test_bleu_tokenize_choices_are_sacrebleus():
    from sacrebleu.metrics.bleu import _TOKENIZERS

    from sftkit.plugins.metrics.bleu_metric import TOKENIZERS

    assert set(TOKENIZERS) == set(_TOKENIZERS)


def test_allowed_values_in_words():
    from typing import Annotated, Literal, Optional

    from pydantic import Field

    cases = [(Annotated[int, Field(ge=1)], "an integer of at least 1"),
             (Annotated[float, Field(gt=0, le=1)], "a number more than 0 and at most 1"),
             (Annotated[float, Field(ge=0, lt=1)], "a number of at least 0 and less than 1"),
             (Annotated[int, Field(ge=0, le=10)], "an integer from 0 to 10"),
             (float, "a finite number"), (bool, "true or false"), (str, "text"),
             (Annotated[str, Field(min_length=1)], "non-empty text"),
             (Literal["a", "b"], "one of a, b"), (Optional[Annotated[int, Field(ge=1)]], "an integer of at least 1 (or null)"),
             (Annotated[list[str], Field(min_length=1)], "a non-empty list of text"),
             (dict[str, str], "a mapping (key: value) whose values are text")]
    for annotation, words in cases:
        assert Declared("x", annotation).allowed == words, annotation


# -- a third-party plugin's options: declared the same way, checked the same way --------------------

PLUGIN = '''
from __future__ import annotations

from typing import Annotated, Literal, TYPE_CHECKING

from pydantic import Field

from sftkit import hookimpl

if TYPE_CHECKING:
    from somewhere import Unknown


def weighted(segments, weight: Annotated[float, Field(ge=0, le=1, description="prompt weight")] = 0.5,
             mode: Literal["a", "b"] = "a", steps=3, names=("input",)):
    """A masking strategy with declared, inferred and tuple options."""
    return [weight] * len(segments)


def sloppy(segments, level: Unknown = 2):
    """An annotation that cannot be resolved: the option keeps the type of its default."""
    return [1.0] * len(segments)


@hookimpl
def register_masking_strategies(register):
    register(weighted)
    register(sloppy)
'''


@pytest.fixture
def plugin(register_plugin):
    module = types.ModuleType("values_plugin")
    exec(compile(PLUGIN, "values_plugin.py", "exec"), module.__dict__)
    register_plugin(module, name="values_plugin")
    return module


def test_a_plugins_annotated_options_are_checked_before_any_work(plugin, sftkit_registry, run_cli):
    component = sftkit_registry.get("masking_strategies", "weighted")
    assert component.bind({"weight": "0.25", "mode": "b", "steps": "4", "names": "a,b"}).options == {
        "weight": 0.25, "mode": "b", "steps": 4, "names": ["a", "b"]}
    error = refusal(sftkit_registry, "masking_strategies", "weighted", {"weight": 2})
    assert error.message == "masking strategy 'weighted' (plugin values_plugin): option weight must be at most 1, got 2"
    assert "option mode must be one of a, b, got 'c'" in refusal(sftkit_registry, "masking_strategies", "weighted",
                                                                  {"mode": "c"}).message
    assert "option steps must be an integer, got 'x'" in refusal(sftkit_registry, "masking_strategies", "weighted",
                                                                 {"steps": "x"}).message
    sloppy = sftkit_registry.get("masking_strategies", "sloppy")
    assert sloppy.declared_options["level"].declared is False  # the default's type (int) is used instead
    assert "option level must be an integer, got 'high'" in refusal(sftkit_registry, "masking_strategies", "sloppy",
                                                                    {"level": "high"}).message
    # through the CLI: exit 2 before the data file is even opened
    result = run_cli("preview", "does-not-exist.jsonl", "--masking", "weighted", "--masking-option", "weight=nan")
    assert result.exit_code == 2
    assert ("masking strategy 'weighted' (plugin values_plugin): option weight must be a number from 0 to 1, got nan "
            "(from --masking-option weight=nan)") in squash(result.stderr)
    assert "does-not-exist" not in result.stderr


def test_plugins_json_shows_defaults_as_json_and_each_options_schema(plugin, run_cli):
    result = run_cli("plugins", "--json")
    components = {(c["kind"], c["name"]): c for c in json.loads(result.stdout)["components"]}
    weighted = components[("masking_strategies", "weighted")]
    assert weighted["options"] == {"weight": 0.5, "mode": "a", "steps": 3, "names": ["input"]}  # a list, not "('input',)"
    assert weighted["option_schemas"]["weight"] == {"type": "number", "minimum": 0, "maximum": 1,
                                                    "description": "prompt weight", "default": 0.5}
    assert weighted["option_schemas"]["mode"]["enum"] == ["a", "b"]
    f1 = components[("metrics", "f1")]
    assert f1["options"]["average"] == ["macro", "weighted"]
    assert f1["option_schemas"]["average"]["items"]["enum"] == ["macro", "weighted", "micro"]


def test_the_readme_example_of_declared_options_runs_and_is_checked(register_plugin, run_cli, tmp_path):
    section = (ROOT / "README.md").read_text("utf-8").split("### Options checked by value", 1)[1].split("\n### ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    module = types.ModuleType("sftkit_long")
    exec(compile(code, "README.md", "exec"), module.__dict__)
    register_plugin(module, name="long")
    bad = run_cli("validate", QA, "--no-tokenizer", "--report-dir", tmp_path, "--validator-option",
                  "long_outputs.max_words=0")
    assert bad.exit_code == 2
    assert ("validator 'long_outputs' (plugin long): option max_words must be at least 1, got 0 (from "
            "--validator-option long_outputs.max_words=0)") in squash(bad.stderr)
    good = run_cli("validate", QA, "--no-tokenizer", "--report-dir", tmp_path, "--only", "long_outputs",
                   "--validator-option", "long_outputs.max_words=1", "--json", tmp_path / "v.json")
    issues = json.loads((tmp_path / "v.json").read_text("utf-8"))["issues"]
    assert good.exit_code == 0 and [i["code"] for i in issues] == ["long_output"]


# -- where values come from: spec files, recipes, flags -----------------------------------------------

def test_a_specs_validator_option_names_the_spec_file_and_key(run_cli, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("format: alpaca\nvalidators: {quality: {num_perm: 0}}\n", "utf-8")
    result = run_cli("validate", QA, "--no-tokenizer", "--spec", spec, "--report-dir", tmp_path / "r")
    assert result.exit_code == 2
    assert (f"validator 'quality' (plugin validators): option num_perm must be at least 1, got 0 (from the spec "
            f"{spec}, key validators.quality.num_perm)") in squash(result.stderr)
    assert "Traceback" not in result.stderr and not (tmp_path / "r").exists()


def test_a_bad_value_stops_train_before_the_tokenizer_or_a_model_loads(run_cli, tmp_path, monkeypatch):
    import sftkit.models

    def no_loading(*_args, **_kwargs):
        raise AssertionError("a model or tokenizer was loaded before the options were checked")

    monkeypatch.setattr(sftkit.models, "load_tokenizer", no_loading)
    monkeypatch.setattr(sftkit.models, "load_model", no_loading)
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.read_text("utf-8") + "\nvalidators: {balance: {max_share: 5}}\n", "utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("masking: prompt_weighted\nmasking_options: {prompt_weight: -1}\n", "utf-8")
    cases = [
        (["--spec", spec], f"option max_share must be at most 1, got 5 (from the spec {spec}, key "
                           f"validators.balance.max_share)"),
        ([recipe], f"option prompt_weight must be at least 0, got -1 (from the recipe {recipe}, key "
                   f"masking_options.prompt_weight)"),
        (["--loader-option", "max_line_bytes=0"], "option max_line_bytes must be at least 1, got 0 (from "
                                                  "--loader-option max_line_bytes=0)"),
        (["--lr", "nan"], "--lr must be a number more than 0 and at most 1 (or null), got nan"),
        (["--warmup-ratio", "5"], "--warmup-ratio must be at most 1, got 5.0"),
        (["--epochs", "0"], "--epochs must be more than 0, got 0.0"),
        (["--seed", "-1"], "--seed must be at least 0, got -1"),
        (["--lora-dropout", "1"], "--lora-dropout must be less than 1, got 1.0"),
        (["--target-modules", ","], "--target-modules must be a non-empty list of non-empty text, got ','"),
        (["--max-steps", str(10**9)], "--max-steps must be at most 100000000, got 1000000000"),
    ]
    for args, fragment in cases:
        result = run_cli("train", "--data", SENTIMENT, "--model", "tiny-random", "--output-dir", tmp_path / "run",
                         *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert fragment in squash(result.stderr), (args, result.stderr)
        assert not (tmp_path / "run").exists()


def test_an_output_dir_that_is_a_file_is_one_message_before_any_work(run_cli, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine", "utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"output_dir: {taken}\n", "utf-8")
    for args in (["--output-dir", taken], [recipe]):
        result = run_cli("train", "--data", SENTIMENT, "--model", "tiny-random", *args)
        assert result.exit_code == 2
        assert f"--output-dir {taken} is a file, not a folder" in squash(result.stderr)
        assert result.stderr.count("error:") == 1
    assert taken.read_text("utf-8") == "mine"


# -- severity codes and preview rows ------------------------------------------------------------------

def test_a_misspelt_severity_code_is_refused_with_the_closest_codes(run_cli, tmp_path):
    result = run_cli("validate", QA, "--no-tokenizer", "--report-dir", tmp_path, "--severity",
                     "exact_duplicat=off")
    assert result.exit_code == 2
    assert "--severity: unknown issue code 'exact_duplicat'; did you mean 'exact_duplicate'" in squash(result.stderr)
    spec = tmp_path / "spec.yaml"
    spec.write_text("format: alpaca\nseverity: {near_duplicat: info}\n", "utf-8")
    result = run_cli("validate", QA, "--no-tokenizer", "--report-dir", tmp_path, "--spec", spec)
    assert result.exit_code == 2
    assert (f"the spec {spec}, key severity: unknown issue code 'near_duplicat'; did you mean 'near_duplicate'"
            in squash(result.stderr))
    ok = run_cli("validate", QA, "--no-tokenizer", "--report-dir", tmp_path, "--severity", "exact_duplicate=off")
    assert ok.exit_code in (0, 1), ok.stderr


def test_a_severity_code_of_a_plugin_that_declares_codes_is_known(register_plugin, run_cli, tmp_path):
    from sftkit import hookimpl

    def odd(context):
        """A validator with declared codes."""
        return []

    odd.codes = {"odd_row": ("info", "an odd row", "none")}

    class Plugin:
        @hookimpl
        def register_validators(self, register):
            register(odd)

    register_plugin(Plugin(), name="odd")
    result = run_cli("validate", QA, "--no-tokenizer", "--report-dir", tmp_path, "--severity", "odd_row=error")
    assert result.exit_code in (0, 1), result.stderr


def test_preview_start_past_the_end_says_how_many_rows_there_are(run_cli):
    rows = len(QA.read_text("utf-8").splitlines())
    result = run_cli("preview", QA, "--model", "tiny-random", "--start", "500")
    assert result.exit_code == 2
    assert f"--start 500 is past the end of {QA}, which has {rows} rows (0 to {rows - 1})" in squash(result.stderr)
    assert f"hint: pass --start {rows - 3} to see the last rows" in squash(result.stderr)
    assert run_cli("preview", QA, "--model", "tiny-random", "--start", str(rows - 1), "--format", "json").exit_code == 0


# -- eval: metric options before any model loads --------------------------------------------------------

@pytest.mark.parametrize("options, fragment", [
    (["--metric-option", "rouge.tokenizer=klingon"], "option tokenizer must be one of default, whitespace, char"),
    (["--metric-option", "exact_match.mode=regex"], "exact_match: mode regex needs a pattern"),
    (["--metric-option", "exact_match.pattern=(", "--metric-option", "exact_match.mode=regex"],
     "option pattern must be a regular expression"),
])
def test_metric_options_are_refused_before_any_model_loads(run_cli, tmp_path, options, fragment):
    result = run_cli("eval", "--model", tmp_path / "no-such-model", "--data", QA, "--metrics", "rouge,exact_match",
                     "--report-dir", tmp_path / "r", *options)
    assert result.exit_code == 2
    assert fragment in squash(result.stderr)
    assert "no-such-model" not in result.stderr  # the model was never looked at


def test_target_modules_lora_cannot_adapt_are_one_message(run_cli, tmp_path):
    """Found by tests/test_value_properties.py: an empty name or a module that is not a layer LoRA
    wraps (an activation, a container) reached PEFT and was an internal error."""
    recipe = tmp_path / "r.yaml"
    for modules, fragment in (("['']", "target_modules must be a non-empty list of non-empty text, got ['']"),
                              ("[act_fn]", "target module(s) act_fn of tiny-random are not layers LoRA can adapt"),
                              ("[layers]", "target module(s) layers of tiny-random are not layers LoRA can adapt"),
                              ("[nope]", "target module(s) nope not found in tiny-random")):
        recipe.write_text(f"target_modules: {modules}\n", "utf-8")
        result = run_cli("train", recipe, "--data", SENTIMENT, "--spec", SPEC, "--model", "tiny-random",
                         "--no-validate", "--max-steps", "1", "--output-dir", tmp_path / "run")
        assert result.exit_code == 2, (modules, result.stderr)
        assert fragment in squash(result.stderr), (modules, result.stderr)


def test_two_trainings_in_one_process_may_use_different_precisions(run_cli, tmp_path):
    """Found by tests/test_value_properties.py: accelerate kept the first run's mixed precision
    process-wide, so a second in-process run with ``precision: bf16`` was an internal error."""
    for precision in ("fp32", "bf16"):
        result = run_cli("train", "--data", SENTIMENT, "--spec", SPEC, "--model", "tiny-random", "--no-validate",
                         "--max-steps", "1", "--batch-size", "2", "--precision", precision,
                         "--output-dir", tmp_path / precision)
        assert result.exit_code == 0, (precision, result.stderr)


@pytest.mark.parametrize("args, fragment", [
    (["eval", "--model", "tiny-random", "--data", QA, "--seed", "-1"], "'--seed': -1 is not in the range 0<=x<=4294967295"),
    (["eval", "--model", "tiny-random", "--data", QA, "--resamples", "1000000"],
     "'--resamples': 1000000 is not in the range 100<=x<=100000"),
    (["eval", "--model", "tiny-random", "--data", QA, "--max-new-tokens", str(10**9)], "'--max-new-tokens'"),
    (["validate", QA, "--max-length", str(10**8)], "'--max-length': 100000000 is not in the range 1<=x<=10000000"),
    (["validate", QA, "--batch-size", str(2**40)], "'--batch-size'"),
])
def test_command_flags_have_bounds(run_cli, args, fragment):
    """A negative bootstrap seed used to fail inside numpy after generation (exit 3)."""
    result = run_cli(*args)
    assert result.exit_code == 2 and fragment in squash(result.stderr), result.stderr
