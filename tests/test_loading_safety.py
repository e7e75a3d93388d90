"""Loading safety: nothing that sftkit reads (model folders, checkpoints, run folders, YAML,
plugins) runs code unless the user asks for it.

- ``trust_remote_code`` is False unless ``--trust-remote-code`` is passed (checked in the
  source and in behaviour);
- model and adapter weights load only from safetensors; the pickles of a checkpoint (its
  optimizer and RNG state, read by accelerate) go through ``torch.load(weights_only=True)``;
  a pickle that would run code when unpickled is refused before or while loading, and its
  code never runs (a marker file it would create stays absent);
- YAML goes through the safe loader (no Python tags, no aliases);
- recipe and spec paths are resolved (recipe-relative) and checked;
- a third-party plugin that raises at import does not break ``sftkit --help``.
"""
from __future__ import annotations

import ast
import functools
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from sftkit.errors import DataError, SftkitError, UsageError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("sftkit", "plugins") for p in (ROOT / folder).rglob("*.py"))


def dotted(node: ast.AST) -> str:
    """``torch.load`` for ``torch.load(...)``'s func, ``from_pretrained`` chains likewise."""
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


@functools.lru_cache(maxsize=1)
def calls() -> list[tuple[Path, ast.Call]]:
    out = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text("utf-8"), filename=str(path))):
            if isinstance(node, ast.Call):
                out.append((path, node))
    return out


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


# -- the source ----------------------------------------------------------------------------------
def test_sources_found():
    assert len(SOURCES) > 20 and ROOT / "sftkit" / "models.py" in SOURCES


def test_trust_remote_code_is_never_hard_coded_on():
    passed = [(p, c) for p, c in calls() if keyword(c, "trust_remote_code") is not None]
    assert len(passed) >= 5
    on = [where(p, c) for p, c in passed
          if isinstance(keyword(c, "trust_remote_code"), ast.Constant) and keyword(c, "trust_remote_code").value]
    assert on == []
    defaults = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args + node.args.kwonlyargs
                values = ([None] * (len(node.args.args) - len(node.args.defaults)) + list(node.args.defaults)
                          + list(node.args.kw_defaults))
                for arg, default in zip(args, values):
                    if arg.arg == "trust_remote_code":  # no default (a required argument) is fine too
                        defaults.append((where(path, node), default is None
                                         or (isinstance(default, ast.Constant) and default.value is False)))
    assert defaults and all(ok for _, ok in defaults), defaults


def test_torch_load_only_with_weights_only():
    loads = [(p, c) for p, c in calls() if dotted(c.func).endswith("torch.load")]
    bad = [where(p, c) for p, c in loads
           if not (isinstance(keyword(c, "weights_only"), ast.Constant) and keyword(c, "weights_only").value is True)]
    assert bad == []


def test_no_pickle_eval_or_unsafe_yaml():
    forbidden = {"pickle.load", "pickle.loads", "dill.load", "joblib.load", "yaml.unsafe_load", "yaml.full_load",
                 "yaml.load_all", "marshal.loads", "eval", "exec"}
    found = [where(p, c) + " " + dotted(c.func) for p, c in calls() if dotted(c.func) in forbidden]
    # the example store keeps finished chunks of its own Example objects pickled in memory (never on
    # disk, never from outside the process): the one allowed pickle.loads.
    allowed = {("store.py", "pickle.loads")}
    found = [f for f in found if (Path(f.split(":")[0]).name, f.split()[-1]) not in allowed]
    assert found == []
    yaml_loads = [(p, c) for p, c in calls() if dotted(c.func) == "yaml.load"]
    assert [(p.name, dotted(keyword(c, "Loader"))) for p, c in yaml_loads] == [("spec.py", "NoAliasLoader")]
    for path in SOURCES:
        text = path.read_text("utf-8")
        for unsafe in ("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader", "shell=True"):
            assert unsafe not in text, f"{path.relative_to(ROOT)} uses {unsafe}"


def test_model_weights_are_read_with_use_safetensors():
    model_loads = [(p, c) for p, c in calls()
                   if dotted(c.func).endswith(".from_pretrained") and "Model" in dotted(c.func)
                   and not dotted(c.func).startswith("PeftModel")]
    assert model_loads
    # The GGUF conversion reads the GGUF file (no pickle) and writes safetensors.
    bad = [where(p, c) for p, c in model_loads if keyword(c, "use_safetensors") is None and keyword(c, "gguf_file") is None]
    assert bad == []


# -- behaviour -----------------------------------------------------------------------------------
class Recorder:
    """Stands in for ``from_pretrained``: records the keyword arguments, returns ``value``."""

    def __init__(self, value=None):
        self.value, self.calls = value, []

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs)
        return self.value


def test_load_tokenizer_and_model_default_to_no_remote_code(monkeypatch, tmp_path, tokenizer):
    import transformers

    from sftkit.models import load_model, load_tokenizer

    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')  # a model folder (one without is refused)
    tok, model = Recorder(tokenizer), Recorder(object())
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    load_tokenizer(str(tmp_path))
    load_model(str(tmp_path))
    assert tok.calls[-1]["trust_remote_code"] is False
    assert model.calls[-1]["trust_remote_code"] is False and model.calls[-1]["use_safetensors"] is True
    load_tokenizer(str(tmp_path), trust_remote_code=True)
    load_model(str(tmp_path), trust_remote_code=True)
    assert tok.calls[-1]["trust_remote_code"] is True and model.calls[-1]["trust_remote_code"] is True


@pytest.mark.parametrize("flag", [[], ["--trust-remote-code"]])
def test_only_the_cli_flag_turns_remote_code_on(monkeypatch, run_cli, tmp_path, tokenizer, flag):
    import transformers

    recorder = Recorder(tokenizer)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", recorder)
    (tmp_path / "tokenizer_config.json").write_text("{}")  # a tokenizer folder (an empty one is refused up front)
    result = run_cli("preview", ROOT / "demo" / "financial_sentiment" / "train.jsonl", "--spec",
                     ROOT / "demo" / "financial_sentiment" / "spec.yaml", "--model", tmp_path, "-n", "1",
                     "--format", "json", *flag)
    assert result.exit_code == 0, result.stderr
    assert [c["trust_remote_code"] for c in recorder.calls] == [bool(flag)]


class RunsCode:
    """A pickle payload: unpickling it calls open(marker, "w"), i.e. runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def evil_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"weight": RunsCode(marker)}, protocol=2))
    return path


def test_the_evil_pickle_really_runs_code(tmp_path):
    marker = tmp_path / "ran"
    pickle.loads(evil_pickle(tmp_path / "x.bin", marker).read_bytes())  # noqa: S301 - proving the payload
    assert marker.exists()


def test_pickle_only_model_folder_is_refused_without_unpickling(tmp_path):
    from sftkit.models import load_model

    marker = tmp_path / "ran"
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    evil_pickle(tmp_path / "pytorch_model.bin", marker)
    with pytest.raises(UsageError, match="no .safetensors weights"):
        load_model(str(tmp_path))
    assert not marker.exists()


def test_safetensors_are_read_and_a_pickle_beside_them_is_ignored(tmp_path, tiny_model):
    import torch

    from sftkit.models import load_model

    folder = tmp_path / "model"
    tiny_model.save_pretrained(folder, safe_serialization=True)
    marker = tmp_path / "ran"
    evil_pickle(folder / "pytorch_model.bin", marker)
    loaded = load_model(str(folder))
    assert not marker.exists()
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("pickled", ["optimizer.bin", "random_states_0.pkl"])
def test_checkpoint_state_is_unpickled_with_weights_only(tmp_path, pickled):
    """A checkpoint written through accelerate, its optimizer or RNG pickle replaced by one that
    runs code: resume refuses it (accelerate's weights_only load, sftkit's RNG pre-check)."""
    import torch
    from accelerate import Accelerator

    from sftkit.train.checkpoints import load_checkpoint, only_trainable_hook, save_checkpoint

    accelerator = Accelerator(cpu=True)
    module = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(module.parameters())
    module, optimizer = accelerator.prepare(module, optimizer)
    module(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    handle = accelerator.register_save_state_pre_hook(only_trainable_hook)
    try:
        folder = save_checkpoint(accelerator, tmp_path / "checkpoints", 1, {"processes": 1}, keep=2)
        load_checkpoint(accelerator, module, folder)  # the untouched checkpoint loads
        marker = tmp_path / "ran"
        evil_pickle(folder / pickled, marker)
        with pytest.raises(UsageError, match="could not be read safely"):
            load_checkpoint(accelerator, module, folder)
        assert not marker.exists()
    finally:
        handle.remove()
        accelerator._models.clear()
        accelerator._optimizers.clear()


def test_run_folder_with_a_pickled_adapter_is_refused(tmp_path):
    import shutil

    from sftkit.models import smollm2_folder
    from sftkit.runs import load_for_inference, write_run

    run = tmp_path / "run"
    run.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_folder() / name, run / name)
    (run / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    marker = tmp_path / "ran"
    evil_pickle(run / "adapter_model.bin", marker)
    write_run(run, {"base_model": "tiny-random", "method": "lora"})
    with pytest.raises(UsageError, match="adapter_model.safetensors"):
        load_for_inference(run)
    assert not marker.exists()


def test_yaml_python_tags_are_refused_in_specs_and_recipes(tmp_path):
    from sftkit.recipe import load_recipe_file
    from sftkit.spec import load_spec

    marker = tmp_path / "ran"
    payload = f"!!python/object/apply:builtins.open [{str(marker)!r}, w]"
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: {payload}\nformat: alpaca\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {payload}\n")
    for load, path in ((load_spec, spec), (load_recipe_file, recipe)):
        with pytest.raises(DataError, match="could not determine a constructor"):
            load(str(path))
    assert not marker.exists()


def test_recipe_paths_resolve_against_the_recipe_folder_and_are_checked(tmp_path, monkeypatch, run_cli):
    from sftkit.recipe import build_recipe

    folder = tmp_path / "project"
    folder.mkdir()
    recipe = folder / "recipe.yaml"
    recipe.write_text("data: [train.jsonl]\nspec: my_spec.yaml\neval_data: ../held_out.jsonl\nmodel: tiny-random\n")
    monkeypatch.chdir(tmp_path)
    built = build_recipe(recipe, {})
    assert [d.path for d in built.data] == [str(folder / "train.jsonl")]
    assert built.spec == str(folder / "my_spec.yaml")
    assert built.eval_data == str(tmp_path / "held_out.jsonl")  # normalised: no "project/.." left
    result = run_cli("train", recipe, "--max-steps", "1")
    assert result.exit_code == 2
    assert "Traceback" not in result.stdout + result.stderr
    flat = "".join(result.stderr.split())
    assert "".join(str(folder).split()) in flat and ("train.jsonl" in flat or "my_spec.yaml" in flat)


def test_spec_paths_are_checked(tmp_path):
    from sftkit.spec import load_spec

    with pytest.raises(UsageError, match="does not exist"):
        load_spec(str(tmp_path / "missing.yaml"))
    (tmp_path / "folder.yaml").mkdir()
    with pytest.raises(UsageError, match="does not exist"):
        load_spec(str(tmp_path / "folder.yaml"))
    with pytest.raises(UsageError, match="unknown spec"):
        load_spec("../../etc/passwd")  # not a YAML path and not a built-in name: refused, never read


def test_a_plugin_that_raises_at_import_does_not_break_the_cli(tmp_path):
    """A real entry point in a fresh process: --help works, plugins names the broken plugin
    (exit 1), and a data command still runs."""
    site = tmp_path / "site"
    dist = site / "evil_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evil-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sftkit]\nevil = evil_plugin\n")
    (site / "evil_plugin.py").write_text("raise RuntimeError('evil plugin exploded at import')\n")
    env = {**os.environ, "PYTHONPATH": str(site), "SFTKIT_NO_PROGRESS": "1"}
    env.pop("SFTKIT_LOAD_PLUGINS", None)

    def sftkit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sftkit", *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=300)

    helped = sftkit("--help")
    assert helped.returncode == 0 and "validate" in helped.stdout
    plugins = sftkit("plugins")
    assert plugins.returncode == 1
    assert "evil" in plugins.stdout + plugins.stderr and "exploded at import" in plugins.stdout + plugins.stderr
    validated = sftkit("validate", str(ROOT / "tests" / "data" / "bad" / "bom.jsonl"), "--no-tokenizer",
                       "--report-dir", str(tmp_path / "reports"), "--only", "schema")
    assert validated.returncode == 0, validated.stderr
    for result in (helped, plugins, validated):
        assert "Traceback" not in result.stdout + result.stderr


def test_remote_code_error_from_a_model_folder_is_a_usage_error(tmp_path):
    """A folder whose config asks for custom code fails cleanly instead of running it."""
    from sftkit.models import load_tokenizer

    marker = tmp_path / "ran"
    (tmp_path / "config.json").write_text('{"model_type": "evil", "auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", null],'
                                          ' "AutoConfig": "evil.EvilConfig"}}')
    (tmp_path / "tokenizer_config.json").write_text('{"auto_map": {"AutoTokenizer": ["evil.EvilTokenizer", null]}}')
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(SftkitError):
        load_tokenizer(str(tmp_path))
    assert not marker.exists()
