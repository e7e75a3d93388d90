"""The run folder: what ``sftkit train`` writes and what ``sftkit eval`` reads.

A run folder holds:

- ``sftkit_run.json``: how the model was trained (see ``RUN_KEYS``): base model, method
  (``lora`` or ``full``), template and masking (with options), the dataset spec, the max
  length, the special tokens added to the tokenizer, the resolved recipe, and the sha256 of
  each weights file (``sha256``: ``{file name: hex digest}``, taken when it is written);
- the tuned weights as safetensors: a PEFT adapter (``adapter_config.json`` +
  ``adapter_model.safetensors``) or a full model (``config.json`` + ``model.safetensors``);
- the tokenizer, with its ``chat_template`` set to the training template where the template
  has a Jinja form, so other tools prompt the model exactly as it was trained;
- ``recipe.yaml`` (resolved), ``metrics.jsonl``, ``train.html`` + ``train.json`` (the reporters' output)
  and ``checkpoints/checkpoint-N/``;
- ``README.md``: the model card (``sftkit.card``; ``sftkit eval`` adds its headline), and
  ``tensorboard/`` with ``report_to: [tensorboard]``.

Every file is written atomically, and ``sftkit_run.json`` last: a folder without it is not
(yet) a finished run. ``eval``, ``chat`` and ``export`` open a run folder with ``open_run``,
which checks it first (``run_folder_problem``: the run description is well-formed, the model
config and tokenizer files parse, the weights are whole safetensors files whose sha256 still
matches) and refuses a damaged folder with one message naming the file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sftkit.errors import DataError, UsageError, os_reason
from sftkit.io import atomic_write_json

RUN_FILE = "sftkit_run.json"
LOCK_FILE = ".sftkit-run.lock"  # held (flock) by the training that writes the folder; marks it as sftkit's
RUN_KEYS = ("sftkit_version", "base_model", "method", "template", "template_options", "masking",
            "masking_options", "spec", "max_length", "added_tokens", "recipe", "sha256")
METHODS = ("lora", "full")
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder holding ``sftkit_run.json``."""
    path = Path(path)
    return path.is_dir() and (path / RUN_FILE).is_file()


def read_run(path: str | Path) -> dict:
    """The run description (``sftkit_run.json``) of a run folder, checked for the required keys
    and the shape of every value (``description_problem``)."""
    path = Path(path)
    file = path / RUN_FILE
    if not file.is_file():
        if path.is_dir() and is_sftkit_folder(path):
            raise not_a_model_folder(path)
        raise UsageError(f"{path} is not an sftkit run folder (no {RUN_FILE})",
                         hint="pass the --output-dir of a finished `sftkit train`, or a model name")
    try:
        info = json.loads(file.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise DataError(f"unreadable run description: {reason}", path=str(file)) from None
    except OSError as exc:
        raise DataError(f"cannot read: {os_reason(exc)}", path=str(file)) from None
    if not isinstance(info, dict):
        raise DataError("the run description must be a JSON object", path=str(file))
    missing = [key for key in ("base_model", "method") if key not in info]
    if missing:
        raise DataError(f"the run description lacks {', '.join(missing)}", path=str(file))
    if info["method"] not in METHODS:
        raise DataError(f"unknown method {info['method']!r} (expected lora or full)", path=str(file), field="method")
    problem = description_problem(info)
    if problem is not None:
        key, message = problem
        raise DataError(message, path=str(file), field=key)
    return info


def not_a_model_folder(path: str | Path) -> UsageError:
    """The message for a folder given as a model that is neither a model nor a finished run: an
    sftkit run that did not finish (how to finish it), or some other folder."""
    path = Path(path)
    if is_sftkit_folder(path):
        found = any((path / "checkpoints").glob("checkpoint-*"))
        return UsageError(f"{path} is an sftkit run that did not finish (it has no {RUN_FILE}, which training writes "
                          f"last)", hint=f"finish it from its newest checkpoint: sftkit train --output-dir {path} "
                                         f"--resume latest-valid" if found else
                          f"it kept no checkpoint: train it again (sftkit train ... --output-dir {path} --overwrite)")
    return UsageError(f"{path} is a folder but not a model: it has no config.json (a model saved with save_pretrained) "
                      f"and no {RUN_FILE} (a run folder of `sftkit train`)",
                      hint="pass a run folder, a model folder, or a model name (smollm2-135m, tiny-random)")


def _text_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _mapping_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and all(isinstance(k, str) for k in value))


def description_problem(info: dict) -> tuple[str, str] | None:
    """``(key, what is wrong)`` for the first value of a run description of the wrong shape
    (the saved spec is checked as a spec file is, the saved recipe's settings as a recipe's), or None."""
    from sftkit.errors import SftkitError
    from sftkit.recipe import KEYS, check_settings
    from sftkit.spec import spec_from_dict

    base = info.get("base_model")
    if not isinstance(base, str) or not base.strip():
        return "base_model", f"base_model must name the base model (text), got {base!r:.80}"
    for key in ("sftkit_version", "template", "masking"):
        if not _text_or_none(info.get(key)):
            return key, f"{key} must be text, got {type(info[key]).__name__}"
    for key in ("template_options", "masking_options"):
        if not _mapping_or_none(info.get(key)):
            return key, f"{key} must be a mapping of option names to values, got {type(info[key]).__name__}"
    length = info.get("max_length")
    if length is not None and (type(length) is not int or length < 1):
        return "max_length", f"max_length must be a whole number of 1 or more, got {length!r:.80}"
    added = info.get("added_tokens")
    if added is not None and not (isinstance(added, list) and all(isinstance(t, str) for t in added)):
        return "added_tokens", "added_tokens must be a list of texts"
    digests = info.get("sha256")
    if digests is not None and not (isinstance(digests, dict) and all(
            isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in digests.items())):
        return "sha256", "sha256 must map file names to hex digests"
    spec = info.get("spec")
    if spec is not None:
        if not isinstance(spec, dict):
            return "spec", f"the saved dataset spec must be a mapping, got {type(spec).__name__}"
        try:
            spec_from_dict(spec, "")
        except SftkitError as exc:
            return "spec", f"the saved dataset spec is not well-formed: {exc.message}"
    recipe = info.get("recipe")
    if recipe is not None:
        if not isinstance(recipe, dict):
            return "recipe", f"the saved recipe must be a mapping, got {type(recipe).__name__}"
        try:  # keys of another sftkit version are left alone; the known ones are checked by value
            check_settings({k: v for k, v in recipe.items() if k in KEYS}, "the saved recipe")
        except SftkitError as exc:
            return "recipe", exc.message  # "the saved recipe: lr must be more than 0, got -0.5"
    return None


def weight_files(path: str | Path) -> list[Path]:
    """The weights files of a finished run folder: its top-level ``*.safetensors``."""
    return sorted(Path(path).glob("*.safetensors"))


def run_folder_problem(path: str | Path) -> str | None:
    """Why the finished run folder ``path`` cannot be loaded (a short reason naming the file), or None.

    Checked, without loading a model: ``sftkit_run.json`` parses and every value has its shape
    (``read_run``); the model config (``adapter_config.json`` or ``config.json``) and the
    tokenizer files parse as JSON objects; the weights (``adapter_model.safetensors``, or
    ``model.safetensors`` or the shards its index lists) are whole safetensors files
    (``sftkit.integrity.safetensors_problem``); and their sha256, recorded in
    ``sftkit_run.json`` when the run was written, still matches (folders of older sftkit
    versions have none and are not compared).
    """
    from sftkit.errors import SftkitError
    from sftkit.integrity import digest_problem, json_problem, safetensors_problem

    path = Path(path)
    try:
        info = read_run(path)
    except SftkitError as exc:
        return exc.message
    if info["method"] == "lora":
        config, weights = path / ADAPTER_CONFIG, [path / ADAPTER_WEIGHTS]
    else:
        config, weights = path / "config.json", [path / "model.safetensors"]
        index = path / "model.safetensors.index.json"
        if not weights[0].is_file() and index.is_file():  # a sharded full model
            table, problem = json_problem(index)
            if problem:
                return problem
            shards = table.get("weight_map")
            if not isinstance(shards, dict) or not shards:
                return f"{index} is damaged (no weight_map)"
            weights = [path / str(name) for name in sorted(set(shards.values()))]
    _, problem = json_problem(config)
    if problem:
        return problem
    _, problem = json_problem(path / "tokenizer_config.json")
    if problem:
        return problem
    if (path / "tokenizer.json").exists():
        _, problem = json_problem(path / "tokenizer.json")
        if problem:
            return problem
    for file in weights:
        problem = safetensors_problem(file)
        if problem:
            return problem
    return digest_problem(path, info.get("sha256"))


# Run folders found sound in this process, by the size and time of each file: open_run checks a
# folder once, however often a command opens it (eval checks it up front and again as it loads).
_SOUND: dict[Path, tuple] = {}


def _signature(path: Path) -> tuple:
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()))


def open_run(path: str | Path) -> dict:
    """The run description of a finished run folder, after ``run_folder_problem`` found it sound.

    A folder without ``sftkit_run.json`` is "not an sftkit run folder"; a damaged one is one
    ``UsageError`` (exit 2) naming the file and what is wrong, with what to do about it.
    """
    path = Path(path)
    if not is_run_dir(path):
        return read_run(path)  # says why it is not a run folder
    key = path.resolve()
    if _SOUND.get(key) == _signature(path):
        return read_run(path)
    problem = run_folder_problem(path)
    if problem is not None:
        raise UsageError(f"cannot use the run folder {path}: {problem}", hint=repair_hint(path))
    _SOUND[key] = _signature(path)
    return read_run(path)


def repair_hint(path: str | Path) -> str:
    """What to do about a damaged run folder: finish it again from a checkpoint, or train it again."""
    path = Path(path)
    recipe = path / "recipe.yaml"
    again = f"sftkit train {recipe} --output-dir {path}" if recipe.is_file() else f"sftkit train ... --output-dir {path}"
    if any((path / "checkpoints").glob("checkpoint-*")):
        return (f"write it again from its newest sound checkpoint ({again} --resume latest-valid), "
                f"or train it again ({again} --overwrite)")
    return f"train it again ({again} --overwrite); the folder has no checkpoints to finish it from"


class RunClaim:
    """The exclusive claim of a run folder by one training process (an flock on ``LOCK_FILE``).

    The lock is released when the process ends, however it ends; the file stays and marks the
    folder as a sftkit run folder.
    """

    def __init__(self, path: Path, fd: int, created: bool) -> None:
        self.path, self.fd, self.created = path, fd, created

    def release(self) -> None:
        """Give the folder up. The lock file stays, unless nothing else was written (a run that
        failed on its input leaves no folder behind)."""
        import os

        if self.fd < 0:
            return
        lock = self.path / LOCK_FILE
        if [child.name for child in self.path.iterdir()] == [LOCK_FILE]:
            lock.unlink(missing_ok=True)
            if self.created:
                self.path.rmdir()
        os.close(self.fd)
        self.fd = -1


def is_sftkit_folder(path: Path) -> bool:
    """True when a folder was written by ``sftkit train`` (lock file, run file or checkpoints)."""
    return ((path / LOCK_FILE).exists() or (path / RUN_FILE).exists()
            or any((path / "checkpoints").glob("checkpoint-*")))


def refuse_non_folder(path: str | Path) -> None:
    """Refuse a run folder path that exists but is not a folder (a file, a FIFO): one message,
    given when the recipe is checked and again when the folder is claimed."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--output-dir {path} is a file, not a folder", hint="choose another --output-dir")


def claim_run_folder(path: str | Path) -> RunClaim:
    """Create (if needed) and lock a run folder for one training.

    Refused with one message: a path that is a file, an existing folder that is neither empty
    nor a sftkit run folder (its files would be replaced), and a folder another training holds.
    """
    import fcntl
    import os

    path = Path(path)
    refuse_non_folder(path)
    if path.is_dir() and not is_sftkit_folder(path):
        entries = sorted(child.name for child in path.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
            raise UsageError(f"--output-dir {path} is not empty and is not a sftkit run folder (it holds {shown}); "
                             f"training would replace files in it",
                             hint="choose a new or empty --output-dir")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"cannot create the run folder {path}: {exc.strerror or exc}",
                         hint="choose a writable --output-dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise UsageError(f"--output-dir {path} is in use by another training (pid {holder})",
                         hint="wait for it to finish, or choose another --output-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return RunClaim(path, fd, created)


def write_run(path: str | Path, info: dict) -> Path:
    """Write ``sftkit_run.json`` atomically (call it last, once the weights are saved), with the
    sha256 of each weights file in the folder (``sha256``, verified by ``open_run``)."""
    from sftkit.integrity import digests

    unknown = sorted(set(info) - set(RUN_KEYS))
    if unknown:
        raise ValueError(f"unknown run keys: {unknown}")
    path = Path(path)
    info = {**info, "sha256": digests(path, weight_files(path))} if info.get("sha256") is None else info
    return atomic_write_json(path / RUN_FILE, {key: info.get(key) for key in RUN_KEYS})


def chat_messages(example: Any, include_response: bool = False) -> list[dict]:
    """An Example as chat messages for the saved tokenizer's ``chat_template``.

    With ``add_generation_prompt=True`` the render equals the training prompt
    (``Encoder.prompt``). A single-turn user message also carries ``instruction`` and ``input``
    (the Alpaca template renders its ``### Input:`` section from them).
    """
    turns = example.turns()
    messages = [{"role": m.role, "content": m.content} for m in turns]
    if not example.is_conversation and example.input:
        user = next(m for m in messages if m["role"] == "user")
        user.update(instruction=example.instruction, input=example.input)
    if not include_response and messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return messages


def template_jinja(template: Any) -> str | None:
    """The Jinja chat template of a bound template, for the options it was bound with: what the
    saved tokenizer's ``chat_template`` holds (None when the template has no Jinja form).

    A template's ``jinja`` attribute is a string, or ``jinja(**options) -> str | None`` called
    with the template's options (its defaults, then the options set), so an option that
    changes the rendering (a system prompt) changes the chat template too.
    """
    import inspect

    from sftkit.errors import PluginError

    jinja = getattr(template, "jinja", None)
    if callable(jinja):
        component = getattr(template, "component", None)
        defaults = ({k: v for k, v in component.options().items() if v is not inspect.Parameter.empty}
                    if component is not None else {})
        jinja = jinja(**{**defaults, **dict(getattr(template, "options", {}) or {})})
    if jinja is not None and not isinstance(jinja, str):
        name = getattr(template, "__name__", "?")
        raise PluginError(f"template {name!r}: jinja must be a string or a function returning one, got "
                          f"{type(jinja).__name__}", hint="return the chat template text (or None for no Jinja form)")
    return jinja or None


def load_for_inference(model_or_run_dir: str | Path, dtype: str | None = None, trust_remote_code: bool = False,
                       device: Any = "cpu") -> tuple[Any, Any, dict | None]:
    """``(model, tokenizer, run_info)`` for a model name or a run folder, in eval mode, on ``device``.

    A plain name (``smollm2-135m``, ``tiny-random``, a folder, a hub id) loads through
    ``sftkit.models``; ``run_info`` is then None. A run folder loads its base model, grows
    the embeddings when the run added tokens, applies the LoRA adapter (weights only from
    safetensors; merged for fast generation) or loads the full model, and uses the run's
    tokenizer. The weights load straight onto ``device`` (``cpu``, ``cuda``, a ``torch.device``)
    in ``dtype`` (default: bf16 on a GPU that supports it, fp16 on other GPUs, fp32 on CPU).
    """
    import torch

    from sftkit.models import load_model, load_tokenizer, weights_dtype

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    dtype = dtype or weights_dtype(device)
    device_map = {"": device.index} if device.type == "cuda" else None  # CPU: the plain load, as always
    if not is_run_dir(model_or_run_dir):
        name = str(model_or_run_dir)
        tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
        model = load_model(name, dtype=dtype, trust_remote_code=trust_remote_code, device_map=device_map)
        model.eval()
        return model, tokenizer, None
    from transformers import AutoTokenizer

    from sftkit.io import reading

    folder = Path(model_or_run_dir)
    info = open_run(folder)  # a damaged folder is one message here, before anything loads
    with reading(folder / "tokenizer.json", "tokenizer file"):
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if info["method"] == "full":
        with reading(folder / "model.safetensors", "model file"):
            model = load_model(str(folder), dtype=dtype, trust_remote_code=trust_remote_code, device_map=device_map)
    else:
        from peft import PeftModel

        model = load_model(str(info["base_model"]), dtype=dtype, trust_remote_code=trust_remote_code,
                           device_map=device_map)
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        with reading(folder / ADAPTER_WEIGHTS, "adapter file"):
            model = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        model = model.merge_and_unload()
        model = model.to(getattr(torch, dtype))
    model.eval()
    return model, tokenizer, info
