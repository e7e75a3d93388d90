"""The GPU paths, checked on CPU: device and dtype choice (CUDA mocked where needed), the
quantize and flash-attention messages, attention kernels that keep packed examples apart (and
refuse what they do not implement), gradient checkpointing, the loss module's model-specific
logits, and eval freeing one model before loading the next."""
from __future__ import annotations

import gc
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sftkit.errors import UsageError
from sftkit.recipe import build_recipe

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "train"
SPEC = HERE.parent / "demo" / "financial_sentiment" / "spec.yaml"
SENTIMENT = DATA / "sentiment.jsonl"
QA = DATA / "qa.jsonl"
CUDA = torch.device("cuda", 0)


def _err(result) -> str:
    return " ".join(result.stderr.split())


def _recipe(**extra):
    settings = {"data": [str(SENTIMENT)], "spec": str(SPEC), "model": "tiny-random", "batch_size": 4}
    settings.update(extra)
    return build_recipe(None, settings)


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda reporting one device; ``bf16`` chooses whether bf16 is native."""
    state = SimpleNamespace(bf16=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: state.bf16)
    return state


# -- device and dtype --------------------------------------------------------------------------------

def test_weights_dtype_by_device_and_precision(fake_cuda):
    from sftkit.models import weights_dtype

    cpu = torch.device("cpu")
    assert weights_dtype(cpu) == "float32"
    assert weights_dtype(CUDA) == "bfloat16"
    fake_cuda.bf16 = False
    assert weights_dtype(CUDA) == "float16"  # bf16 not native: fp16
    assert weights_dtype(CUDA, "fp32") == "float32" and weights_dtype(cpu, "bf16") == "bfloat16"
    assert weights_dtype(CUDA, "bf16") == "bfloat16"


def test_mixed_precision_follows_the_gpu(fake_cuda, monkeypatch):
    from sftkit.train.model import mixed_precision

    assert mixed_precision(_recipe()) == "bf16"
    fake_cuda.bf16 = False
    assert mixed_precision(_recipe()) == "fp16"
    assert mixed_precision(_recipe(precision="fp32")) == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert mixed_precision(_recipe()) == "no" and mixed_precision(_recipe(precision="bf16")) == "bf16"


def test_resolve_device(monkeypatch, fake_cuda):
    from sftkit.models import resolve_device

    assert resolve_device("auto") == CUDA and resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(UsageError, match="no CUDA device"):
        resolve_device("cuda")


def test_model_device_map_per_engine():
    from accelerate.utils import DistributedType

    from sftkit.train.model import model_device_map

    def acc(device, kind, index=0, stage=None):
        return SimpleNamespace(device=torch.device(device), distributed_type=kind, local_process_index=index,
                               state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage)))

    assert model_device_map(acc("cpu", DistributedType.NO)) is None
    assert model_device_map(acc("cuda", DistributedType.MULTI_GPU, 3)) == {"": 3}  # each rank: its own GPU
    assert model_device_map(acc("cuda", DistributedType.NO)) == {"": 0}
    assert model_device_map(acc("cuda", DistributedType.FSDP, 1)) is None  # the engine shards it
    assert model_device_map(acc("cuda", DistributedType.DEEPSPEED, 1, stage=3)) is None  # partitioned at load
    assert model_device_map(acc("cuda", DistributedType.DEEPSPEED, 1, stage=2)) == {"": 1}


@pytest.mark.parametrize("method", ["lora", "full"])
def test_build_model_dtypes_base_in_precision_trainable_fp32(tokenizer, method):
    from sftkit.train.model import build_model

    model = build_model(_recipe(precision="bf16", method=method), tokenizer, [], device="cpu")
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert trainable == {torch.float32}
    if method == "lora":
        assert frozen == {torch.bfloat16}  # the frozen base in the precision's dtype
    else:
        assert frozen == set()  # full fine-tuning: every weight is an fp32 master weight


def test_build_model_loads_onto_the_local_gpu(monkeypatch, fake_cuda, tokenizer, tiny_model):
    """On a GPU the base loads in bf16 with device_map {"": local index} (mocked: no GPU here)."""
    import sftkit.models
    from sftkit.train.model import build_model

    seen = {}

    def fake_load(name, **kwargs):
        seen.update(kwargs, name=name)
        return tiny_model

    monkeypatch.setattr(sftkit.models, "load_model", fake_load)
    build_model(_recipe(), tokenizer, [], device=CUDA, device_map={"": 0})
    assert seen["dtype"] == "bfloat16" and seen["device_map"] == {"": 0} and seen["quantization_config"] is None


def test_load_for_inference_on_a_gpu_loads_bf16_onto_it(monkeypatch, fake_cuda, tiny_model):
    import sftkit.models
    from sftkit.runs import load_for_inference

    seen = {}

    def fake_load(name, **kwargs):
        seen.update(kwargs)
        return tiny_model

    monkeypatch.setattr(sftkit.models, "load_model", fake_load)
    load_for_inference("tiny-random", device="cuda")
    assert seen["dtype"] == "bfloat16" and seen["device_map"] == {"": 0}
    load_for_inference("tiny-random", device="cpu")
    assert seen["dtype"] == "float32" and seen["device_map"] is None


def test_eval_device_cuda_without_cuda_exits_2(run_cli):
    result = run_cli("eval", "--model", "tiny-random", "--data", QA, "--device", "cuda", "--limit", "2")
    assert result.exit_code == 2 and "no CUDA device" in _err(result)
    assert "loading" not in result.stderr


def test_eval_frees_the_first_model_before_loading_the_second(run_cli, monkeypatch, tmp_path):
    import sftkit.runs

    real = sftkit.runs.load_for_inference
    loaded: list = []

    def tracking(name, **kwargs):
        if loaded:
            assert loaded[-1]() is None, "the first model is still alive while the second loads"
        model, tokenizer, info = real(name, **kwargs)
        loaded.append(weakref.ref(model))
        return model, tokenizer, info

    monkeypatch.setattr(sftkit.runs, "load_for_inference", tracking)
    result = run_cli("eval", "--model", "tiny-random", "--compare", "tiny-random", "--data", QA, "--limit", "2",
                     "--max-new-tokens", "2", "--resamples", "100", "--report-dir", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert len(loaded) == 2
    gc.collect()


# -- quantize and kernels: the messages ----------------------------------------------------------------

def test_quantize_without_cuda_or_bitsandbytes_exits_2_with_one_message(run_cli, tmp_path):
    result = run_cli("train", "--data", QA, "--model", "tiny-random", "--quantize", "4bit", "--max-steps", "1",
                     "--output-dir", tmp_path / "q", "--no-validate")
    assert result.exit_code == 2, result.stderr
    err = _err(result)
    assert "quantize 4bit (QLoRA) needs a CUDA GPU" in err and "bitsandbytes package" in err
    assert "Traceback" not in result.stderr and not (tmp_path / "q").exists()


def test_quantize_message_names_only_what_is_missing(fake_cuda, monkeypatch):
    import importlib.util

    from sftkit.train.model import quantization_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(UsageError) as caught:
        quantization_config(_recipe(quantize="8bit"), CUDA)
    assert "needs the bitsandbytes package" in caught.value.message and "CUDA" not in caught.value.message
    assert quantization_config(_recipe(), CUDA) is None


def test_quantize_with_full_is_refused(run_cli):
    result = run_cli("train", "--data", QA, "--model", "tiny-random", "--quantize", "4bit", "--full")
    assert result.exit_code == 2 and "cannot be combined with full fine-tuning" in _err(result)


def test_flash_attention_messages(run_cli, tmp_path, fake_cuda, monkeypatch):
    import importlib.util

    from sftkit.train.attention import choose_kernel

    real = importlib.util.find_spec
    installed: set = set()
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: SimpleNamespace() if name in installed else
                        (None if name.startswith("flash_attn") else real(name, *a)))
    with pytest.raises(UsageError, match="needs the flash-attn package"):
        choose_kernel("flash_attention_2", CUDA)
    assert choose_kernel("auto", CUDA) == "flex_attention"  # no flash-attn: flex attention
    installed.add("flash_attn")
    assert choose_kernel("auto", CUDA) == "flash_attention_2" == choose_kernel("flash_attention_2", CUDA)
    installed.add("flash_attn_interface")
    assert choose_kernel("auto", CUDA) == "flash_attention_3"
    assert choose_kernel("auto", torch.device("cpu")) == "sftkit"
    with pytest.raises(UsageError, match="needs a CUDA GPU"):
        choose_kernel("flash_attention_2", torch.device("cpu"))


def test_flash_attention_on_cpu_exits_2(run_cli, tmp_path):
    result = run_cli("train", "--data", QA, "--model", "tiny-random", "--attention", "flash_attention_2",
                     "--output-dir", tmp_path / "f", "--no-validate")
    assert result.exit_code == 2 and "attention flash_attention_2 needs a CUDA GPU" in _err(result)


# -- attention: examples kept apart on each path that runs here ------------------------------------------

def _packed_and_alone(model, samples, kernel="sftkit"):
    """(loss of the packed row, sum of each example's loss alone, padded with the model's own attention)."""
    from sftkit.train.data import collate
    from sftkit.train.loss import batch_inputs, make_loss_module

    module = make_loss_module(model)
    with torch.no_grad():
        alone = sum(float(module(**batch_inputs(collate([s], packed=False, pad_id=0), "cpu"))[0]) for s in samples)
    return module, alone


def _samples(lengths, vocab=64, seed=0):
    import numpy as np

    from sftkit.train.data import Sample

    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = rng.integers(3, vocab, n)
        out.append(Sample(ids, np.arange(n - 1), ids[1:], np.ones(n - 1, dtype=np.float32)))
    return out


def _small(config_class, attn="sdpa", **extra):
    import transformers

    base = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(**{**base, **extra})
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    model.config.use_cache = False
    return model.eval()


def _packed_loss(model, samples, kernel):
    from sftkit.train.data import collate
    from sftkit.train.loss import batch_inputs, make_loss_module

    with torch.no_grad():
        return float(make_loss_module(model)(**batch_inputs(collate(samples, packed=True, pad_id=0), "cpu", kernel))[0])


def test_sliding_window_is_computed_not_dropped():
    """Mistral-style sliding window 4 with examples of 9-12 tokens: the packed kernel's loss of
    each example equals the model's own (SDPA, its sliding-window mask); ignoring the window
    would give another loss (the control)."""
    from sftkit.train.attention import use_kernel

    samples = _samples([9, 12, 10])
    windowed = _small("MistralConfig", sliding_window=4)
    _, alone = _packed_and_alone(windowed, samples)
    full = _small("MistralConfig", sliding_window=None)  # same seed, same weights, no window
    _, alone_full = _packed_and_alone(full, samples)
    assert abs(alone - alone_full) > 1e-3  # the window matters for these lengths
    assert use_kernel(windowed, "sftkit") is None
    assert _packed_loss(windowed, samples, "sftkit") == pytest.approx(alone, rel=1e-5, abs=1e-4)


def test_packed_kernel_uses_sdpa_gqa_without_repeating_kv(monkeypatch):
    """4 query heads, 2 key/value heads: the kernel hands SDPA the 2 heads with enable_gqa."""
    from sftkit.train.attention import packed_attention

    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.shape[1], k.shape[1], kwargs.get("enable_gqa")))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    q, k, v = torch.randn(1, 4, 7, 8), torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    out, _ = packed_attention(SimpleNamespace(), q, k, v, None, sftkit_bounds=[(0, 3), (3, 7)])
    assert seen == [(4, 2, True), (4, 2, True)]
    rep = lambda t: t.repeat_interleave(2, dim=1)  # noqa: E731 - the reference: K/V repeated to 4 heads
    expected = torch.cat([real(q[:, :, a:b], rep(k)[:, :, a:b], rep(v)[:, :, a:b], is_causal=True)
                          for a, b in [(0, 3), (3, 7)]], dim=2).transpose(1, 2)
    torch.testing.assert_close(out, expected)


def test_packed_kernel_refuses_what_it_does_not_implement():
    from sftkit.train.attention import UnsupportedAttention, packed_attention, use_kernel

    q = k = v = torch.randn(1, 2, 4, 8)
    for extra in ({"softcap": 50.0}, {"s_aux": torch.zeros(2)}, {"something_new": 1}):
        with pytest.raises(UnsupportedAttention, match=next(iter(extra))):
            packed_attention(SimpleNamespace(), q, k, v, None, sftkit_bounds=[(0, 4)], **extra)
    gemma = _small("Gemma2Config", attn="eager", head_dim=8, attn_logit_softcapping=50.0, sliding_window=4)
    reason = use_kernel(gemma, "sftkit")
    assert reason and "softcap" in reason
    assert gemma.config._attn_implementation == "eager"  # switched back: the model's own attention


def test_training_a_soft_capped_model_falls_back_to_padded_batches(run_cli, tmp_path, tokenizer):
    """A Gemma-2-style model (attention soft-capping) trains on padded batches, and says so."""
    import transformers

    folder = tmp_path / "gemma2"
    config = transformers.Gemma2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       head_dim=8, sliding_window=16, attn_logit_softcapping=50.0,
                                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                       eos_token_id=tokenizer.eos_token_id)
    transformers.Gemma2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = tmp_path / "run"
    result = run_cli("train", "--data", QA, "--model", folder, "--max-steps", "1", "--output-dir", out,
                     "--no-validate", "--attention", "sftkit")
    assert result.exit_code == 0, result.stderr
    err = _err(result)
    assert "does not implement softcap" in err and "training on padded batches instead" in err
    import json

    assert json.loads((out / "train.json").read_text())["summary"]["attention"] == "padded"


def test_transformers_flex_attention_keeps_packed_examples_apart(monkeypatch):
    """The CUDA default without flash-attn: transformers' flex_attention with the block-diagonal
    causal mask it builds from the restarting position ids. Run here with flex attention's
    eager (uncompiled) kernel; the compiled kernel runs only in the GPU check."""
    import transformers.integrations.flex_attention as flex
    import transformers.masking_utils as masking
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    monkeypatch.setattr(flex, "compile_friendly_flex_attention",
                        lambda q, k, v, training=False, **kw: flex_attention(q, k, v, **kw))
    monkeypatch.setattr(masking, "create_block_mask", lambda *a, _compile=False, **kw: create_block_mask(*a, **kw))
    samples = _samples([9, 12, 10])
    model = _small("LlamaConfig")
    _, alone = _packed_and_alone(model, samples)
    model.set_attn_implementation("flex_attention")
    assert _packed_loss(model, samples, "flex_attention") == pytest.approx(alone, rel=1e-5, abs=1e-4)
    windowed = _small("MistralConfig", sliding_window=4)
    _, alone = _packed_and_alone(windowed, samples)
    windowed.set_attn_implementation("flex_attention")
    assert _packed_loss(windowed, samples, "flex_attention") == pytest.approx(alone, rel=1e-5, abs=1e-4)


def test_packed_batches_carry_varlen_bounds_for_flash_attention():
    from sftkit.train.data import collate
    from sftkit.train.loss import batch_inputs

    batch = collate(_samples([3, 5, 2]), packed=True, pad_id=0)
    assert batch["cu_seq_lens"].tolist() == [0, 3, 8, 10] and batch["cu_seq_lens"].dtype == torch.int32
    assert batch["max_length"] == 5
    flash = batch_inputs(batch, "cpu", "flash_attention_2")
    assert flash["cu_seq_lens_q"].tolist() == flash["cu_seq_lens_k"].tolist() == [0, 3, 8, 10]
    assert flash["max_length_q"] == flash["max_length_k"] == 5 and flash["bounds"] is None
    assert batch_inputs(batch, "cpu", "flex_attention")["bounds"] is None  # flex: the position ids suffice
    assert "cu_seq_lens_q" not in batch_inputs(batch, "cpu", "sftkit")
    assert batch_inputs(batch, "cpu", "sftkit")["bounds"] == [(0, 3), (3, 8), (8, 10)]


# -- the loss module ------------------------------------------------------------------------------------

def test_loss_module_applies_final_logit_softcapping():
    """Gemma-2's forward caps the logits after the head; the trained-positions loss does too."""
    from sftkit.train.data import collate
    from sftkit.train.loss import batch_inputs, make_loss_module

    model = _small("Gemma2Config", attn="eager", head_dim=8, final_logit_softcapping=0.5, attn_logit_softcapping=None)
    sample = _samples([9])[0]
    batch = collate([sample], packed=False, pad_id=0)
    with torch.no_grad():
        loss_sum, weight_sum = make_loss_module(model)(**batch_inputs(batch, "cpu"))
        reference = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
    torch.testing.assert_close(loss_sum / weight_sum, reference, rtol=1e-5, atol=1e-5)


def test_loss_module_carries_no_split_modules(tiny_model):
    from sftkit.train.loss import make_loss_module

    module = make_loss_module(tiny_model)
    assert set(module._no_split_modules) == {"LlamaDecoderLayer"} == set(tiny_model._no_split_modules)
    assert module.is_loaded_in_4bit is False and module.is_loaded_in_8bit is False


# -- gradient checkpointing ------------------------------------------------------------------------------

@pytest.mark.parametrize("method, packed", [("lora", True), ("lora", False), ("full", True), ("full", False)])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tokenizer, method, packed):
    from sftkit.train.attention import use_kernel
    from sftkit.train.data import collate
    from sftkit.train.loss import batch_inputs, make_loss_module
    from sftkit.train.model import base_of, build_model

    samples = _samples([9, 14, 6], vocab=200)
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_model(_recipe(method=method, gradient_checkpointing=checkpointing), tokenizer, [], device="cpu")
        torch.manual_seed(1)
        with torch.no_grad():  # LoRA B starts at zero, which would leave A without a gradient
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.02)
        if packed:
            assert use_kernel(base_of(model), "sftkit") is None
        assert base_of(model).is_gradient_checkpointing is checkpointing
        model.train()
        loss_sum, _ = make_loss_module(model)(**batch_inputs(collate(samples, packed=packed, pad_id=0), "cpu"))
        loss_sum.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        assert grads and all(g.abs().sum() > 0 for g in grads.values())
        results.append((float(loss_sum.detach()), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_b == pytest.approx(loss_a, rel=1e-6)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-5, atol=1e-7)


# -- the GPU check --------------------------------------------------------------------------------------

def test_gpu_check_without_cuda_says_so_and_exits_0():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(HERE.parent / "bench" / "gpu_check.py")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device here" in proc.stdout and "nothing ran" in proc.stdout


def test_gpu_check_compares_the_runs_it_made():
    import sys

    sys.path.insert(0, str(HERE.parent / "bench"))
    import gpu_check

    def job(name, losses, code=0):
        item = gpu_check.Job(name, "smollm2-135m-shaped", [])
        item.result = {"returncode": code, "losses": losses}
        return item

    fp32 = [10.9, 10.8, 10.7]
    jobs = {j.name: j for j in [job("135m lora bf16 packed", [10.91, 10.81, 10.69]), job("135m lora fp32 packed", fp32),
                                job("135m lora fp32 padded", [10.9, 10.8, 10.7001])]}
    results = {label: ok for label, ok, _ in gpu_check.checks(jobs, {})}
    assert results["bf16 LoRA loss tracks fp32 (2%/step)"] is True
    assert results["packed loss = padded loss (fp32; step 1 1e-4, then 1e-3)"] is True
    jobs["135m lora bf16 packed"] = job("135m lora bf16 packed", [10.9, 10.8, 11.2])  # 4.7% off at step 3
    jobs["135m lora fp32 padded"] = job("135m lora fp32 padded", [10.91, 10.8, 10.7])  # step 1 differs by 9e-4
    results = {label: ok for label, ok, _ in gpu_check.checks(jobs, {})}
    assert results["bf16 LoRA loss tracks fp32 (2%/step)"] is False
    assert results["packed loss = padded loss (fp32; step 1 1e-4, then 1e-3)"] is False
    jobs["135m lora fp32 padded"] = job("135m lora fp32 padded", [], code=1)
    assert ("run 135m lora fp32 padded", False) in [(label, ok) for label, ok, _ in gpu_check.checks(jobs, {})]
