"""The result schemas (sftkit/schemas/*.json): the real commands' JSON follows them, the JSON
reports declare schema_version, and sftkit.testing.sample_results() follows them and holds
every field the real commands write."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from sftkit.schemas import SCHEMA_VERSIONS, data_fields, fields, schema, schema_path, validate_result, versioned
from sftkit.testing import sample_results

HERE = Path(__file__).parent
QA = HERE / "data" / "train" / "qa.jsonl"
SENTIMENT = HERE / "data" / "eval" / "sentiment.jsonl"


@pytest.mark.parametrize("kind", sorted(SCHEMA_VERSIONS))
def test_each_schema_is_a_valid_draft_2020_12_schema_and_ships_with_the_package(kind):
    document = schema(kind)
    jsonschema.Draft202012Validator.check_schema(document)
    assert schema_path(kind).name == f"{kind}-{SCHEMA_VERSIONS[kind]}.json"
    assert document["properties"]["schema_version"] == {**document["properties"]["schema_version"],
                                                         "const": SCHEMA_VERSIONS[kind]}
    undocumented = [path for path, node, _ in fields(document) if not node.get("description")]
    assert not undocumented, f"{kind}: fields without a description (the README table needs one): {undocumented}"
    import tomllib

    pyproject = tomllib.loads((HERE.parent / "pyproject.toml").read_text())
    assert "*.json" in pyproject["tool"]["setuptools"]["package-data"]["sftkit.schemas"]


def test_sample_results_follow_the_schemas():
    samples = {r.kind: r for r in sample_results()}
    for kind in SCHEMA_VERSIONS:
        validate_result(kind, samples[kind].data)
        assert samples[kind].data["schema_version"] == SCHEMA_VERSIONS[kind]
    assert set(samples) - set(SCHEMA_VERSIONS) == {"a_kind_this_reporter_does_not_know"}


@pytest.mark.parametrize("kind, path, value", [
    ("validate", ("summary", "errors"), "1"),
    ("validate", ("issues", 0, "severity"), "fatal"),
    ("train", ("summary", "method"), "qlora"),
    ("eval", ("examples", 0, "outputs", "tuned", "stopped"), "tired"),
    ("eval", ("metrics", "accuracy", "tuned", "value"), None),
    ("eval", ("schema_version",), 2),
])
def test_a_result_that_breaks_its_schema_is_refused(kind, path, value):
    data = copy.deepcopy(next(r for r in sample_results() if r.kind == kind).data)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema(kind), cls=jsonschema.Draft202012Validator)


def test_a_missing_required_field_is_refused():
    data = copy.deepcopy(next(r for r in sample_results() if r.kind == "eval").data)
    del data["examples"][1]["outputs"]["base"]["tokens"]
    with pytest.raises(jsonschema.ValidationError, match="'tokens' is a required property"):
        validate_result("eval", data)


def test_versioned_puts_the_version_first_and_leaves_unknown_kinds_alone():
    assert list(versioned("eval", {"a": 1, "schema_version": 9})) == ["schema_version", "a"]
    assert versioned("eval", {"a": 1})["schema_version"] == SCHEMA_VERSIONS["eval"]
    assert versioned("something_else", {"a": 1}) == {"a": 1}


def test_data_fields_name_keyed_objects_by_their_key():
    data = next(r for r in sample_results() if r.kind == "eval").data
    found = data_fields("eval", data)
    assert {"models.<model>.name", "examples[].outputs.<model>.text", "metrics.<sub_metric>.<model>.low",
            "metrics.<sub_metric>.difference.p_value", "classification.models.<model>.per_class.<label>.f1"} <= found
    assert "models.tuned.name" not in found
    assert data_fields("eval", {**data, "something_new": {"x": 1}}) >= {"something_new"}


# -- the real commands on tiny-random ------------------------------------------------------------

@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> dict[str, list[dict]]:
    """validate, train (with eval data), eval of the run against its base (generation) and a
    classification eval of two models, through the CLI; their JSON reports by kind."""
    from sftkit.testing import run_cli

    root = tmp_path_factory.mktemp("schemas")
    rows = QA.read_text(encoding="utf-8").splitlines()
    (root / "train.jsonl").write_text("\n".join(rows[:9]) + "\n{broken\n", encoding="utf-8")
    (root / "eval.jsonl").write_text("\n".join(rows[9:]) + "\n", encoding="utf-8")
    shutil.copy(SENTIMENT, root / "sentiment.jsonl")
    out: dict[str, list[dict]] = {"validate": [], "train": [], "eval": []}

    def run(*args):
        result = run_cli(*args)
        assert result.exit_code in (0, 1), result.stderr
        return result

    run("validate", root / "train.jsonl", "--model", "tiny-random", "--eval-data", root / "eval.jsonl",
        "--skip-invalid", "--report-dir", root / "v", "--json", root / "v-copy.json")
    out["validate"] += [json.loads((root / "v" / "validate.json").read_text()),
                        json.loads((root / "v-copy.json").read_text())]
    run("train", "--data", root / "train.jsonl", "--model", "tiny-random", "--max-steps", "2", "--skip-invalid",
        "--eval-data", root / "eval.jsonl", "--eval-steps", "1", "--output-dir", root / "run")
    out["train"].append(json.loads((root / "run" / "train.json").read_text()))
    run("eval", "--model", root / "run", "--data", root / "eval.jsonl", "--max-new-tokens", "3", "--resamples", "100",
        "--report-dir", root / "e", "--json", root / "e-copy.json")
    out["eval"] += [json.loads((root / "e" / "eval.json").read_text()), json.loads((root / "e-copy.json").read_text())]
    run("eval", "--model", "tiny-random", "--compare", "tiny-random", "--data", root / "sentiment.jsonl",
        "--spec", "financial_phrasebank",
        "--max-new-tokens", "3", "--resamples", "100", "--report-dir", root / "c")
    out["eval"].append(json.loads((root / "c" / "eval.json").read_text()))
    run("eval", "--model", "tiny-random", "--model", root / "run", "--compare", "tiny-random",
        "--data", root / "sentiment.jsonl", "--spec", "financial_phrasebank",
        "--max-new-tokens", "2", "--resamples", "100", "--report-dir", root / "n")
    out["eval"].append(json.loads((root / "n" / "eval.json").read_text()))
    return out


@pytest.mark.parametrize("kind", sorted(SCHEMA_VERSIONS))
def test_the_real_commands_write_json_that_follows_the_schema(kind, real_runs):
    for data in real_runs[kind]:
        assert next(iter(data)) == "schema_version" and data["schema_version"] == SCHEMA_VERSIONS[kind]
        validate_result(kind, data)


@pytest.mark.parametrize("kind", sorted(SCHEMA_VERSIONS))
def test_sample_results_hold_every_field_the_real_commands_write(kind, real_runs):
    sample = set().union(*(data_fields(kind, r.data) for r in sample_results() if r.kind == kind))
    documented = {path for path, _, _ in fields(schema(kind))}
    for data in real_runs[kind]:
        real = data_fields(kind, data)
        assert real - documented == set(), f"{kind}: fields the schema does not describe: {sorted(real - documented)}"
        assert real - sample == set(), f"{kind}: fields sample_results() lacks: {sorted(real - sample)}"
    if kind == "eval":  # the runs cover both optional parts: two models, and classification
        seen = set().union(*(data_fields(kind, d) for d in real_runs[kind]))
        assert {"classification.models.<model>.confusion", "examples[].change.<sub_metric>",
                "examples[].outputs.<model>.label", "metrics.<sub_metric>.difference.significant",
                "metrics.<sub_metric>.comparisons.<model>.p_holm", "examples[].changes.<model>.<sub_metric>",
                "reference"} <= seen
    if kind == "validate":
        assert real_runs["validate"][0]["dataset"]["skipped_lines"], "the broken line is listed"
