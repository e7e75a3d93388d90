"""Built-in generators: ``hf`` (batched ``model.generate``, the default), ``continuous``
(transformers' continuous batching, ``generate_batch``) and ``vllm`` (when vLLM and a GPU are present).

Each is ``generator(model, tokenizer, prompt_ids, stops, max_new_tokens, **options) ->
list[Generation]``: greedy, the outputs in the prompts' order, cut before the stop
(``sftkit.hookspecs.register_generators``).
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from sftkit import hookimpl
from sftkit.generate import DEFAULT_BATCH_TOKENS

BatchSize = Annotated[int, Field(ge=1, le=4096, description="prompts per generation batch")]
BatchTokens = Annotated[int, Field(ge=1, le=2**24, description="tokens per batch at most (KV cache for hf: rows x (prompt + new))")]


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"{package} (not installed)"


def hf(model: Any, tokenizer: Any, prompt_ids: list, stops: Any, max_new_tokens: int, batch_size: BatchSize = 16,
       max_batch_tokens: BatchTokens = DEFAULT_BATCH_TOKENS,
       share_prefix: Annotated[bool, Field(description="run the prefix every prompt shares once")] = True) -> list:
    """Batched greedy decoding (sftkit.generate.generate_ids): rows leave the batch when they stop and
    waiting prompts take their places, longest prompts first (the default)."""
    from sftkit.generate import generate_ids

    return generate_ids(model, tokenizer, prompt_ids, stops, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        max_batch_tokens=max_batch_tokens, share_prefix=share_prefix)


hf.default = True
hf.version = lambda: _version("transformers")


def _continuous_missing() -> str | None:
    try:
        from transformers import ContinuousBatchingConfig  # noqa: F401
        from transformers.generation.continuous_batching import continuous_api
    except ImportError:
        return "the installed transformers has no continuous batching (generate_batch); upgrade transformers"
    if not hasattr(getattr(continuous_api, "ContinuousMixin", None), "generate_batch"):
        return "the installed transformers has no generate_batch; upgrade transformers"
    return None


def continuous(model: Any, tokenizer: Any, prompt_ids: list, stops: Any, max_new_tokens: int,
               max_batch_tokens: BatchTokens = 4096,
               page_size: Annotated[int, Field(ge=4, le=4096, description="tokens per KV-cache page")] = 64) -> list:
    """transformers' continuous batching (generate_batch): requests join and leave the batch as they finish."""
    from transformers import ContinuousBatchingConfig, GenerationConfig

    from sftkit.errors import UsageError
    from sftkit.generate import finish

    if not hasattr(model, "generate_batch"):
        raise UsageError(f"generator 'continuous': {type(model).__name__} has no generate_batch",
                         hint="use --generator hf")
    prompt_ids = [list(ids) for ids in prompt_ids]
    if not prompt_ids:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops.eos_ids or (0,))[0]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                              eos_token_id=list(stops.token_ids) or None, pad_token_id=pad_id)
    longest = max(len(ids) for ids in prompt_ids) + max_new_tokens
    pages = sum(-(-(len(ids) + max_new_tokens) // page_size) for ids in prompt_ids)
    batching = ContinuousBatchingConfig(page_size=page_size, num_blocks=max(pages, 2) + 1,
                                        max_batch_tokens=max(max_batch_tokens, longest))
    model.eval()
    outputs = model.generate_batch(inputs=prompt_ids, generation_config=config, continuous_batching_config=batching,
                                   progress_bar=False, warmup=False)
    results = list(outputs.values())
    if len(results) != len(prompt_ids) or any(r.error for r in results):
        failed = [r.error for r in results if r.error]
        raise RuntimeError(f"continuous batching returned {len(results)} of {len(prompt_ids)} outputs"
                           + (f": {failed[0]}" if failed else ""))
    return [finish(tokenizer, list(r.generated_tokens)[:max_new_tokens], stops, max_new_tokens) for r in results]


continuous.available = _continuous_missing
continuous.version = lambda: _version("transformers") + " (continuous batching)"


def _vllm_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install vllm, on a machine with a CUDA GPU)"
    import torch

    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU, and none is visible here"
    return None


def vllm(model: Any, tokenizer: Any, prompt_ids: list, stops: Any, max_new_tokens: int,
         gpu_memory_utilization: Annotated[float, Field(gt=0, le=1, description="share of GPU memory vLLM may "
                                                                                "take")] = 0.8,
         max_lora_rank: Annotated[int, Field(ge=1, le=1024, description="the largest LoRA rank to serve")] = 64) -> list:
    """vLLM (greedy, the same stop ids; LoRA runs through adapter requests): needs vLLM and a CUDA GPU."""
    from vllm import LLM, SamplingParams, TokensPrompt

    from sftkit.generate import finish

    source = model  # a sftkit.generate.ModelSource: vLLM loads the weights itself
    engine = LLM(model=source.base_model, tokenizer=source.base_model, dtype=source.dtype or "auto",
                 gpu_memory_utilization=gpu_memory_utilization, enable_lora=source.adapter is not None,
                 max_lora_rank=max_lora_rank, trust_remote_code=source.trust_remote_code)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=list(stops.token_ids),
                            stop=list(stops.strings) or None, skip_special_tokens=True)
    lora = None
    if source.adapter is not None:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("sftkit-adapter", 1, source.adapter)
    outputs = engine.generate([TokensPrompt(prompt_token_ids=list(ids)) for ids in prompt_ids], params,
                              lora_request=lora, use_tqdm=False)
    # vLLM drops the stop token itself; finish() re-derives the text and why it stopped from the ids
    return [finish(tokenizer, list(out.outputs[0].token_ids) + ([out.outputs[0].stop_reason]
                                                                if isinstance(out.outputs[0].stop_reason, int) else []),
                   stops, max_new_tokens) for out in outputs]


vllm.available = _vllm_missing
vllm.version = lambda: _version("vllm")
vllm.loads_model = True


@hookimpl
def register_generators(register):
    """The built-in generators."""
    register(hf)
    register(continuous)
    register(vllm)
