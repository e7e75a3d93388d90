"""The model a run trains: the base model (embeddings grown for added tokens), wrapped with
LoRA or fully trainable, and the precision it trains in."""
from __future__ import annotations

from typing import Any

from sftkit.errors import UsageError
from sftkit.recipe import Recipe


# The layer types PEFT's LoRA wraps (by class name: transformers' Conv1D is GPT-2's linear layer).
LORA_LAYERS = frozenset({"Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D", "MultiheadAttention"})


def build_model(recipe: Recipe, tokenizer: Any, added_tokens: list[str]) -> Any:
    """The base model (embeddings grown for added tokens), wrapped with LoRA or fully trainable."""
    from sftkit.models import load_model

    model = load_model(recipe.model, dtype="float32", trust_remote_code=recipe.trust_remote_code, tokenizer=tokenizer)
    model.config.use_cache = False
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if recipe.method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    adaptable = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                 if name and type(module).__name__ in LORA_LAYERS}
    linear = "linear modules of this model: " + ", ".join(sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and type(m).__name__ == "Linear"}))
    missing = [t for t in recipe.target_modules if t not in names]
    if missing:
        raise UsageError(f"target module(s) {', '.join(missing)} not found in {recipe.model}", hint=linear)
    other = [t for t in recipe.target_modules if t not in adaptable]
    if other:
        raise UsageError(f"target module(s) {', '.join(other)} of {recipe.model} are not layers LoRA can adapt "
                         f"(linear, embedding or convolution layers)", hint=linear)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    config = LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                        target_modules=list(recipe.target_modules), task_type="CAUSAL_LM",
                        modules_to_save=["embed_tokens", "lm_head"] if added_tokens else None,
                        ensure_weight_tying=bool(added_tokens) and tied)
    return get_peft_model(model, config)


def base_of(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def trainable_state(model: Any) -> dict:
    """The trainable parameters by name (what a checkpoint stores)."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def load_trainable(model: Any, weights: dict) -> None:
    """Copy checkpoint weights into the trainable parameters; every one must be present."""
    import torch

    params = trainable_state(model)
    if set(params) != set(weights):
        raise UsageError("the checkpoint does not fit this model (different method, LoRA settings or tokens)",
                         hint="resume with the same recipe as the interrupted run")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])


def mixed_precision(recipe: Recipe) -> str:
    """accelerate's mixed_precision: bf16/fp16 only where asked for or (auto) where the GPU supports it."""
    import torch

    if recipe.precision == "fp32":
        return "no"
    if recipe.precision in ("bf16", "fp16"):
        return recipe.precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"
