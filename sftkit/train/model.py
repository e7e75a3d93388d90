"""The model a run trains: the base model (embeddings grown for added tokens), loaded in the
recipe's weight dtype straight onto this process's device (quantized with ``quantize``),
wrapped with LoRA or fully trainable, with gradient checkpointing where asked for.

Dtypes: a LoRA base loads in bf16 on GPUs that support it natively (fp16 on other GPUs, fp32
on CPU; ``precision`` overrides), while every *trained* weight stays fp32 (LoRA adapters,
``modules_to_save`` copies, and all weights with ``method: full``, whose fp32 copy is the
master for AdamW); ``precision`` also decides the autocast of the forward pass
(``mixed_precision``).
"""
from __future__ import annotations

from typing import Any

from sftkit.errors import UsageError
from sftkit.recipe import Recipe

# The layer types PEFT's LoRA wraps (by class name: transformers' Conv1D is GPT-2's linear layer; any
# class with "Linear" in its name, such as bitsandbytes' Linear4bit and Linear8bitLt, counts too).
LORA_LAYERS = frozenset({"Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D", "MultiheadAttention"})
CHECKPOINTING = {"use_reentrant": False}  # non-reentrant: works with LoRA, kwargs and DDP without input hooks


def model_device_map(accelerator: Any) -> dict | None:
    """Where ``from_pretrained`` puts the weights: this process's GPU (``{"": local index}``), so
    no process stages the model in host memory; None on CPU, and under FSDP and DeepSpeed ZeRO-3,
    whose engines shard the model themselves (FSDP's ``cpu_ram_efficient_loading`` reads the
    weights on rank 0 only; ZeRO-3 partitions them while they load)."""
    from accelerate.utils import DistributedType

    if accelerator.device.type != "cuda" or accelerator.distributed_type == DistributedType.FSDP:
        return None
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        if getattr(accelerator.state.deepspeed_plugin, "zero_stage", 3) >= 3:
            return None
    return {"": accelerator.local_process_index}


def quantization_config(recipe: Recipe, device: Any) -> Any:
    """The ``BitsAndBytesConfig`` of ``quantize`` (None without it); without CUDA or without
    bitsandbytes, one usage error (exit 2) saying what is needed."""
    if not recipe.quantize:
        return None
    import importlib.util

    import torch

    missing = []
    if getattr(device, "type", "cpu") != "cuda" or not torch.cuda.is_available():
        missing.append("a CUDA GPU (this machine has none, or this torch is a CPU build)")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes)")
    if missing:
        raise UsageError(f"quantize {recipe.quantize} (QLoRA) needs " + " and ".join(missing),
                         hint="train without --quantize (LoRA on a bf16 base), or run on a CUDA machine with "
                              "bitsandbytes installed")
    from transformers import BitsAndBytesConfig

    from sftkit.models import weights_dtype

    if recipe.quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = getattr(torch, weights_dtype(device, recipe.precision))
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def base_dtype(recipe: Recipe, device: Any) -> str:
    """The dtype the base weights load in: the precision's dtype for a frozen LoRA base, fp32
    for full fine-tuning (the trained weights are AdamW's fp32 master copy)."""
    from sftkit.models import weights_dtype

    return weights_dtype(device, recipe.precision) if recipe.method == "lora" else "float32"


def build_model(recipe: Recipe, tokenizer: Any, added_tokens: list[str], *, device: Any = None,
                device_map: dict | None = None) -> Any:
    """The base model (embeddings grown for added tokens) on ``device``, quantized with
    ``quantize``, checkpointed with ``gradient_checkpointing``, wrapped with LoRA or fully
    trainable; every trainable weight fp32."""
    import torch

    from sftkit.models import load_model

    device = torch.device(device) if device is not None else torch.device("cpu")
    quantization = quantization_config(recipe, device)
    model = load_model(recipe.model, dtype=base_dtype(recipe, device), trust_remote_code=recipe.trust_remote_code,
                       tokenizer=tokenizer, device_map=device_map, quantization_config=quantization)
    model.config.use_cache = False
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=dict(CHECKPOINTING))
    elif recipe.gradient_checkpointing:
        enable_checkpointing(model)
    if recipe.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    model = _with_lora(model, recipe, added_tokens)
    for param in model.parameters():  # adapters (PEFT upcasts them) and modules_to_save copies
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def enable_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing of every decoder layer (transformers' own)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise UsageError(f"{type(model).__name__} does not support gradient checkpointing",
                         hint="train without --gradient-checkpointing")
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.20; older: the alias
    if enable is not None:
        enable(activation_checkpointing_kwargs=dict(CHECKPOINTING))
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(CHECKPOINTING))


ALL_LINEAR = "all-linear"  # PEFT's shorthand: every linear (and Conv1D) layer except the output head


def _with_lora(model: Any, recipe: Recipe, added_tokens: list[str]) -> Any:
    """The model wrapped with a LoRA adapter on ``target_modules`` (``all-linear``: every linear
    layer but the output head, whatever the architecture names them); with added tokens the
    input and output embeddings, by their own names in this model, are trained and saved whole."""
    from peft import LoraConfig, get_peft_model

    targets = [t for t in recipe.target_modules if t != ALL_LINEAR]
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    adaptable = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                 if name and (type(module).__name__ in LORA_LAYERS or "Linear" in type(module).__name__)}
    linear = "linear modules of this model: " + ", ".join(sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and "Linear" in type(m).__name__}))
    missing = [t for t in targets if t not in names]
    if missing:
        raise UsageError(f"target module(s) {', '.join(missing)} not found in {recipe.model}",
                         hint=f"{linear} (or {ALL_LINEAR}, the default)")
    other = [t for t in targets if t not in adaptable]
    if other:
        raise UsageError(f"target module(s) {', '.join(other)} of {recipe.model} are not layers LoRA can adapt "
                         f"(linear, embedding or convolution layers)", hint=linear)
    if targets and len(targets) != len(recipe.target_modules):
        raise UsageError(f"target_modules: {ALL_LINEAR} already names every linear layer; give it alone or "
                         f"list module names", hint=linear)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    conv1d = any(type(m).__name__ == "Conv1D" for m in model.modules())  # GPT-2's linear layers store W transposed
    config = LoraConfig(fan_in_fan_out=conv1d, r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                        target_modules=targets or ALL_LINEAR, task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
                        modules_to_save=embedding_names(model) if added_tokens else None,
                        ensure_weight_tying=bool(added_tokens) and tied)
    return get_peft_model(model, config)


def embedding_names(model: Any) -> list[str]:
    """The module names of the input and output embeddings (``embed_tokens``/``lm_head`` in Llama,
    ``wte``/``lm_head`` in GPT-2, ``shared``/``lm_head`` in T5): what LoRA trains whole when
    tokens were added."""
    wanted = [model.get_input_embeddings(), model.get_output_embeddings()]
    out = []
    for module in wanted:
        name = next((n for n, m in model.named_modules() if m is module), None)
        if name and name.rsplit(".", 1)[-1] not in out:
            out.append(name.rsplit(".", 1)[-1])
    return out


def base_of(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def trainable_names(model: Any) -> list[str]:
    """The names of the trainable parameters (what a checkpoint's model file holds)."""
    return [name for name, param in model.named_parameters() if param.requires_grad]


def mixed_precision(recipe: Recipe) -> str:
    """accelerate's mixed_precision (the autocast): bf16/fp16 where asked for or (auto) on a GPU:
    bf16 where it is native, else fp16; none on CPU."""
    import torch

    if recipe.precision == "fp32":
        return "no"
    if recipe.precision in ("bf16", "fp16"):
        return recipe.precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "no"
