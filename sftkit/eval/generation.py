"""Generation for ``sftkit eval``: the generator plugin chosen (before any model loads), and the
models loaded for it, where LoRA runs on one base share that base.

    chosen = resolve_generator(registry, "hf", {}, batch_size=16, max_batch_tokens=4096)
    with ModelPool(device="cpu", trust_remote_code=False, share=True) as pool:
        with pool.use("runs/a") as (model, tokenizer, info):
            outputs = chosen.bound(model, tokenizer, prompt_ids, stops, 64)

A ``ModelPool`` with ``share`` keeps the last base model it loaded: a LoRA run folder on that
base (with no added tokens) is attached to it as a named PEFT adapter (``load_adapter`` /
``set_adapter``), and the base itself then runs with the adapters disabled; anything else
frees the pool and loads afresh (``sftkit.runs.load_for_inference``: the adapter merged).
"""
from __future__ import annotations

import gc
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from sftkit.errors import UsageError

FLAG_OPTIONS = {"batch_size": "--batch-size", "max_batch_tokens": "--max-batch-tokens"}


@dataclass
class GeneratorChoice:
    """The generator plugin bound to its options, and what the report records of it."""

    name: str
    bound: Callable
    options: dict
    version: str
    loads_model: bool = False


def resolve_generator(registry: Any, name: str | None, options: Mapping[str, Any], *, batch_size: int,
                      max_batch_tokens: int) -> GeneratorChoice:
    """The generator ``name`` (default: the one declaring ``default``), its options checked, and
    ``--batch-size``/``--max-batch-tokens`` passed where it declares them; a generator that
    cannot run here (``available()``) is a UsageError naming the reason."""
    name = name or registry.default_name("generators")
    component = registry.get("generators", name)
    for option, flag in FLAG_OPTIONS.items():
        if option in options:
            raise UsageError(f"--generator-option {option}=...: set it with {flag}")
    chosen = dict(options)
    declared = component.options()
    if "batch_size" in declared:
        chosen["batch_size"] = batch_size
    if "max_batch_tokens" in declared:
        chosen["max_batch_tokens"] = max_batch_tokens
    bound = component.bind(chosen)
    available = component.attribute("available")
    reason = available() if callable(available) else None
    if reason:
        raise UsageError(f"generator {name!r} cannot run here: {reason}",
                         hint="choose another with --generator (`sftkit plugins` lists them)")
    version = component.attribute("version")
    text = str(version()) if callable(version) else (component.version or "built-in")
    from sftkit.options import EMPTY, json_value

    resolved = {**{k: v for k, v in declared.items() if v is not EMPTY}, **bound.options}
    shown = {k: json_value(v) for k, v in resolved.items()}
    return GeneratorChoice(name, bound, shown, text, bool(component.attribute("loads_model")))


def free_memory() -> None:
    """Collect deleted models and hand their cached GPU memory back."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def adapter_base(name: str) -> str | None:
    """The base model of a LoRA run folder that can share a loaded base, else None."""
    found = _adapter_on_shared_base(name)
    return found[1] if found else None


def _adapter_on_shared_base(name: str) -> tuple[dict, str] | None:
    """``(run info, base model)`` for a LoRA run folder that can ride on a loaded base (no added tokens)."""
    from sftkit.runs import is_run_dir, read_run

    if not is_run_dir(name):
        return None
    info = read_run(name)
    if info.get("method") != "lora" or info.get("added_tokens"):
        return None
    if not (Path(name) / "adapter_model.safetensors").is_file():
        return None
    return info, str(info["base_model"])


@dataclass
class ModelPool:
    """Loads each model for generation; with ``share``, LoRA runs on one base reuse that base."""

    device: Any
    trust_remote_code: bool = False
    share: bool = False
    loads: list[str] = field(default_factory=list)  # the weights loaded from disk, in order (for tests)
    _base_name: str | None = None
    _base: Any = None  # the base model, a PeftModel once an adapter is attached
    _adapters: dict[str, str] = field(default_factory=dict)  # run folder -> adapter name

    def __enter__(self) -> "ModelPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Free the shared base (and its adapters)."""
        self._base, self._base_name, self._adapters = None, None, {}
        free_memory()

    def source(self, name: str) -> Any:
        """A ``ModelSource`` for a generator that loads weights itself, and the run info."""
        from sftkit.generate import ModelSource
        from sftkit.models import weights_dtype
        from sftkit.runs import is_run_dir, read_run

        info = read_run(name) if is_run_dir(name) else None
        if info is None:
            return ModelSource(str(name), str(name), None, str(self.device), weights_dtype(self.device),
                               self.trust_remote_code), None
        if info["method"] == "full":
            return ModelSource(str(name), str(name), None, str(self.device), weights_dtype(self.device),
                               self.trust_remote_code), info
        return ModelSource(str(name), str(info["base_model"]), str(name), str(self.device),
                           weights_dtype(self.device), self.trust_remote_code), info

    @contextmanager
    def use(self, name: str, loads_model: bool = False) -> Iterator[tuple[Any, Any, dict | None]]:
        """``(model, tokenizer, run info)`` of ``name`` for the duration of the block.

        With ``loads_model`` the model is a ``ModelSource`` and only the tokenizer loads."""
        if loads_model:
            yield self.tokenizer_only(name)
            return
        shared = self._shared(name) if self.share else None
        if shared is not None:
            yield shared
            return
        from sftkit.runs import load_for_inference

        self.release()
        with warnings.catch_warnings():  # library deprecation notes are not the user's concern here
            warnings.simplefilter("ignore", FutureWarning)
            if self.share and _adapter_on_shared_base(name) is not None:
                yield self._attach(name)
                return
            model, tokenizer, info = load_for_inference(name, trust_remote_code=self.trust_remote_code,
                                                        device=self.device)
        self.loads.append(str(name))
        if self.share:  # a plain model may be the base of the runs that follow
            self._base, self._base_name = model, str(name)
            yield model, tokenizer, info
            return
        try:
            yield model, tokenizer, info
        finally:
            del model
            free_memory()

    def tokenizer_only(self, name: str) -> tuple[Any, Any, dict | None]:
        """``(ModelSource, tokenizer, run info)`` of ``name``: its tokenizer loads, its weights do not."""
        from transformers import AutoTokenizer

        from sftkit.models import load_tokenizer

        source, info = self.source(name)
        if info is None:
            return source, load_tokenizer(str(name), trust_remote_code=self.trust_remote_code), None
        tokenizer = AutoTokenizer.from_pretrained(str(name))
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        return source, tokenizer, info

    def _shared(self, name: str) -> tuple[Any, Any, dict | None] | None:
        """The loaded base, as itself or with the adapter of ``name`` active; None when it does not fit."""
        if self._base is None:
            return None
        if str(name) == self._base_name:
            from sftkit.models import load_tokenizer

            tokenizer = load_tokenizer(str(name), trust_remote_code=self.trust_remote_code)
            return _AdaptersOff(self._base), tokenizer, None
        found = _adapter_on_shared_base(name)
        if found is None or found[1] != self._base_name:
            return None
        return self._attach(name, loaded=True)

    def _attach(self, name: str, loaded: bool = False) -> tuple[Any, Any, dict | None]:
        """Attach the adapter of run folder ``name`` to the base (loading the base first unless ``loaded``)."""
        import torch
        from peft import PeftModel
        from transformers import AutoTokenizer

        from sftkit.models import load_model, weights_dtype

        info, base_name = _adapter_on_shared_base(name)
        if not loaded:
            dtype = weights_dtype(torch.device(self.device))
            device_map = {"": torch.device(self.device).index or 0} if torch.device(self.device).type == "cuda" else None
            self._base = load_model(base_name, dtype=dtype, trust_remote_code=self.trust_remote_code,
                                    device_map=device_map).eval()
            self._base_name = base_name
            self.loads.append(base_name)
        adapter = self._adapters.get(str(name))
        if adapter is None:
            adapter = f"run{len(self._adapters)}"
            if isinstance(self._base, PeftModel):
                self._base.load_adapter(str(name), adapter_name=adapter, is_trainable=False)
            else:
                self._base = PeftModel.from_pretrained(self._base, str(name), adapter_name=adapter,
                                                       is_trainable=False).eval()
            self._adapters[str(name)] = adapter
        self._base.set_adapter(adapter)
        tokenizer = AutoTokenizer.from_pretrained(str(name))
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        return self._base, tokenizer, info


class _AdaptersOff:
    """The shared base with every adapter disabled while it generates (a PeftModel, or the plain model)."""

    def __init__(self, model: Any):
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._off():
            return self._model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self._off():
            return self._model.generate(*args, **kwargs)

    @contextmanager
    def _off(self) -> Iterator[None]:
        disable = getattr(self._model, "disable_adapter", None)
        if disable is None or not getattr(self._model, "peft_config", None):
            yield
            return
        with disable():
            yield
