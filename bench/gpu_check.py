"""The GPU check in one command: train and evaluate real-sized models on a CUDA machine.

    python bench/gpu_check.py                  # on a CUDA machine (``make gpu-check``)
    python bench/gpu_check.py --bundle .gpu-bundle   # here: the wheels and tokenizer it needs
    python bench/gpu_check.py --cpu-smoke      # the same flow with tiny models on the CPU

On a CUDA machine it builds two randomly initialised models from configs with the SmolLM2
tokenizer (a SmolLM2-135M-shaped Llama and a ~1.1B Llama-shaped one), trains each for a few
steps with ``sftkit train`` (LoRA bf16 and fp32, packed and padded, gradient checkpointing,
full fine-tuning, QLoRA where bitsandbytes is installed, FSDP2 on one process with a checkpoint
and a resume), evaluates one run with generation (``sftkit eval --device cuda``), prints a
table of tokens/s, peak GPU memory and loss, and checks:

- the bf16 LoRA loss tracks the fp32 loss (each step within 2% relative);
- the packed path's loss equals the padded path's (fp32; step 1 within 1e-4, later steps 1e-3);
- gradient checkpointing does not change the loss (bf16, 1e-3), nor does sftkit's own packed
  kernel against flex attention (bf16, 2%);
- the FSDP2 resume retraces the uninterrupted run (1e-3) and exports an adapter;
- eval generates on the GPU for every row.

Without CUDA it says so and exits 0 (CI stays green). Results also go to ``gpu_check.json``
in ``$OUT`` (the device machine hands that folder back) or the work folder. No run starts
after 5.5 minutes and each has a timeout, so the check (with its installation) ends within 8.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "demo" / "financial_sentiment"
BUDGET_S = 330  # no run starts later than this; with installation and eval the check ends within 8 minutes
# What the GPU machine lacks (it has torch, transformers, peft, accelerate, pluggy, pandas,
# pyarrow, rich, sacrebleu, scikit-learn, pyyaml, click, tensorboard and their dependencies):
# sftkit's other dependencies (REQUIREMENTS) and what they need beyond that machine's packages
# (CLOSURE: found with `pip install --dry-run --report` in a virtual environment holding only
# that machine's packages, with transformers 5.17; pydantic's stack added in case it is absent).
# Versions are the ones tested here. Compiled wheels are fetched for CPython 3.10 to 3.14.
REQUIREMENTS = ["datasets==5.2.0", "evaluate==0.4.6", "gguf==0.19.0", "pandera==0.35.0", "rensa==0.5.0",
                "rouge-score==0.1.2", "xxhash==4.1.0"]
CLOSURE = ["dill==0.4.1", "multiprocess==0.70.19", "requests==2.34.2", "six==1.17.0", "typing-inspect==0.9.0",
           "nltk==3.10.4", "typeguard==4.6.1", "aiohttp==3.14.5", "charset-normalizer==3.5.3",
           "mypy_extensions==1.2.0", "urllib3==2.8.0", "defusedxml==0.7.1", "aiohappyeyeballs==2.7.1",
           "aiosignal==1.4.0", "attrs==26.1.0", "frozenlist==1.8.0", "multidict==7.2.1", "propcache==0.5.4",
           "yarl==1.25.1", "pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0",
           "typing-inspection==0.4.5", "setuptools==84.2.1"]
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64", "any")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
SHAPES = {
    # SmolLM2-135M's own config (random weights)
    "smollm2-135m-shaped": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                                num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                                tie_word_embeddings=True, rms_norm_eps=1e-5),
    # a ~1.1B Llama (Llama-3.2-1B's layer shapes, SmolLM2's 49,152-token vocabulary)
    "llama-1b-shaped": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                            num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
                            tie_word_embeddings=True, rms_norm_eps=1e-5),
}
SMOKE_SHAPES = {name: dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True)
                for name in SHAPES}


@dataclass
class Job:
    """One ``sftkit train`` run of the check."""

    name: str
    model: str  # a key of SHAPES
    args: list[str]
    steps: int = 10
    launcher: list[str] = field(default_factory=list)  # e.g. accelerate launch ... (FSDP)
    result: dict = field(default_factory=dict)


def say(text: str) -> None:
    print(text, flush=True)


# -- the bundle (made here, where PyPI is reachable) ----------------------------------------------------

def _download(wheels: Path, packages: list[str], python: str) -> list[str]:
    """Download ``packages`` for CPython ``python``; returns those without a wheel for it."""
    abi = "cp" + python.replace(".", "")
    flags = ["--no-deps", "--only-binary", ":all:", "--python-version", python, "--implementation", "cp",
             "--abi", abi, "--abi", "abi3", "--abi", "none", *[x for p in PLATFORMS for x in ("--platform", p)]]
    command = [sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), *flags]
    if subprocess.run([*command, *packages], capture_output=True).returncode == 0:
        return []
    return [p for p in packages if subprocess.run([*command, p], capture_output=True).returncode != 0]


def make_bundle(folder: Path) -> int:
    """Download the wheels the GPU machine lacks and copy the SmolLM2 tokenizer into ``folder``."""
    from sftkit.models import smollm2_folder

    wheels = folder / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    binary = [p for p in REQUIREMENTS + CLOSURE if not p.startswith("rouge-score")]
    for python in PYTHONS:
        missing = _download(wheels, binary, python)
        if missing:
            say(f"note: no wheel for CPython {python}: {', '.join(missing)}")
    # rouge-score is published as a source archive only: build its (pure Python) wheel here
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    *[p for p in REQUIREMENTS if p.startswith("rouge-score")]], check=True)
    (folder / "requirements.txt").write_text("\n".join(REQUIREMENTS) + "\n", "utf-8")
    (folder / "requirements-all.txt").write_text("\n".join(REQUIREMENTS + CLOSURE) + "\n", "utf-8")
    tokenizer = folder / "tokenizer"
    tokenizer.mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        source = smollm2_folder() / name
        if source.exists():
            shutil.copy(source, tokenizer / name)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    say(f"bundle {folder}: {len(list(wheels.iterdir()))} wheels + tokenizer, {total / 2**20:.1f} MiB")
    return 0 if total < 60 * 2**20 else 1


# -- models and runs ------------------------------------------------------------------------------------

def tokenizer_folder(given: str | None) -> Path:
    """The SmolLM2 tokenizer: --tokenizer, the bundle's copy, or sftkit's cached conversion."""
    for candidate in [given, ROOT / ".gpu-bundle" / "tokenizer"]:
        if candidate and (Path(candidate) / "tokenizer.json").exists():
            return Path(candidate)
    from sftkit.models import smollm2_folder

    return smollm2_folder()


def build_models(work: Path, tokenizer_dir: Path, shapes: dict, device: str) -> dict[str, Path]:
    """Random-initialised Llama models from the shapes, saved (bf16, safetensors) with the tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    folders = {}
    for name, shape in shapes.items():
        folder = work / "models" / name
        folders[name] = folder
        if (folder / "config.json").exists():
            continue
        config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **shape)
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        say(f"built {name}: {sum(p.numel() for p in model.parameters()) / 1e6:,.0f}M parameters")
        del model
    return folders


def jobs(bitsandbytes: bool, smoke: bool) -> list[Job]:
    small, big = "smollm2-135m-shaped", "llama-1b-shaped"
    fsdp = [] if smoke else [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                             str(ROOT / "configs" / "accelerate" / "fsdp.yaml"), "--num_processes", "1"]
    # most important first: a run that would start after the time budget is skipped
    out = [
        Job("135m lora bf16 packed", small, ["--precision", "bf16"]),
        Job("135m lora fp32 packed", small, ["--precision", "fp32"]),
        Job("135m lora fp32 padded", small, ["--precision", "fp32", "--no-packing"]),
        Job("1b lora bf16 packed", big, ["--precision", "bf16"], steps=6),
    ]
    if fsdp:
        out.append(Job("135m lora fsdp2 (1 process)", small, ["--precision", "bf16", "--save-steps", "2"], steps=4,
                       launcher=fsdp))
    out += [
        Job("135m lora bf16 packed gc", small, ["--precision", "bf16", "--gradient-checkpointing"]),
        Job("1b lora bf16 packed gc", big, ["--precision", "bf16", "--gradient-checkpointing"], steps=6),
    ]
    if bitsandbytes:
        out.append(Job("1b qlora 4bit gc", big, ["--quantize", "4bit", "--gradient-checkpointing"], steps=6))
    out += [
        Job("135m full bf16 packed", small, ["--full", "--precision", "bf16"], steps=6),
        Job("1b full bf16 packed gc", big, ["--full", "--precision", "bf16", "--gradient-checkpointing"], steps=4),
        Job("135m lora bf16 sftkit kernel", small, ["--precision", "bf16", "--attention", "sftkit"]),
    ]
    if smoke:
        out = [j for j in out if "sftkit kernel" not in j.name]  # on CPU every packed run uses it
    return out


def train_args(job: Job, folders: dict, out: Path, device_flags: list[str]) -> list[str]:
    return ["train", "--data", str(DATA / "train.jsonl"), "--spec", str(DATA / "spec.yaml"),
            "--model", str(folders[job.model]), "--max-steps", str(job.steps), "--batch-size", "32",
            "--max-tokens-per-forward", "8192", "--lr", "1e-3" if "--full" not in job.args else "5e-5",
            "--warmup-ratio", "0", "--seed", "0", "--no-validate", "--overwrite", "--output-dir", str(out),
            *job.args, *device_flags]


def run(command: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """A subprocess; one that runs past ``timeout`` comes back with returncode 124."""
    try:
        return subprocess.run(command, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return subprocess.CompletedProcess(command, 124, "", err + f"\n(timed out after {timeout:.0f} s)")


def run_job(job: Job, folders: dict, work: Path, env: dict, device_flags: list[str], timeout: float) -> None:
    """``sftkit train`` as a subprocess (``python -m sftkit``, or ``accelerate launch -m sftkit``)."""
    out = work / "runs" / job.name.replace(" ", "-")
    command = [*(job.launcher or [sys.executable]), "-m", "sftkit", *train_args(job, folders, out, device_flags)]
    began = time.time()
    proc = run(command, env, timeout)
    job.result = {"seconds": round(time.time() - began, 1), "returncode": proc.returncode, "out": str(out)}
    if proc.returncode != 0:
        job.result["error"] = proc.stderr[-1500:]
        return
    summary = json.loads((out / "train.json").read_text("utf-8"))["summary"]
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text("utf-8").splitlines()
              if '"loss"' in line]
    job.result.update(summary=summary, losses=losses)
    if job.launcher:
        resume_fsdp(job, folders, env, device_flags, timeout)


def resume_fsdp(job: Job, folders: dict, env: dict, device_flags: list[str], timeout: float) -> None:
    """Resume a copy of the FSDP run from checkpoint-2: the last loss must match."""
    out = Path(job.result["out"])
    again = out.with_name(out.name + "-resumed")
    shutil.rmtree(again, ignore_errors=True)
    shutil.copytree(out / "checkpoints" / "checkpoint-2", again / "checkpoints" / "checkpoint-2")
    args = [a for a in train_args(job, folders, again, device_flags) if a != "--overwrite"] + ["--resume"]
    proc = run([*job.launcher, "-m", "sftkit", *args], env, timeout)
    job.result["resume_returncode"] = proc.returncode
    if proc.returncode == 0:
        lines = (again / "metrics.jsonl").read_text("utf-8").splitlines()
        job.result["resumed_last_loss"] = json.loads(lines[-1])["loss"]
        job.result["resumed_adapter"] = (again / "adapter_model.safetensors").exists()
    else:
        job.result["resume_error"] = proc.stderr[-1500:]


def run_eval(work: Path, trained: Path, env: dict, device: str, timeout: float) -> dict:
    report = work / "eval"
    command = [sys.executable, "-m", "sftkit", "eval", "--model", str(trained), "--data", str(DATA / "test.jsonl"),
               "--spec", str(DATA / "spec.yaml"), "--limit", "64", "--batch-size", "32", "--max-new-tokens", "8",
               "--device", device, "--resamples", "200", "--report-dir", str(report)]
    began = time.time()
    proc = run(command, env, timeout)
    result = {"seconds": round(time.time() - began, 1), "returncode": proc.returncode}
    if proc.returncode != 0:
        result["error"] = proc.stderr[-1500:]
        return result
    data = json.loads((report / "eval.json").read_text("utf-8"))
    result.update(rows=data["rows"], models={role: {"seconds": m["seconds"], "tokens": m["tokens"]}
                                             for role, m in data["models"].items()})
    return result


# -- checks and the table -------------------------------------------------------------------------------

def _close(a: list, b: list, rel: float, first: float | None = None) -> tuple[bool, float]:
    if not a or len(a) != len(b):
        return False, float("nan")
    worst = max(abs(x - y) / max(abs(y), 1e-9) for x, y in zip(a, b))
    ok = worst <= rel and (first is None or abs(a[0] - b[0]) / max(abs(b[0]), 1e-9) <= first)
    return ok, worst


def checks(by_name: dict[str, Job], evaluation: dict) -> list[tuple[str, bool | None, str]]:
    """(check, passed (None: not run), detail)."""
    def losses(name):
        job = by_name.get(name)
        return job.result.get("losses", []) if job else []

    out = []
    for label, a, b, rel, first in [
        ("bf16 LoRA loss tracks fp32 (2%/step)", "135m lora bf16 packed", "135m lora fp32 packed", 0.02, None),
        ("packed loss = padded loss (fp32; step 1 1e-4, then 1e-3)", "135m lora fp32 packed",
         "135m lora fp32 padded", 1e-3, 1e-4),
        ("gradient checkpointing keeps the loss (bf16, 1e-3)", "135m lora bf16 packed gc", "135m lora bf16 packed",
         1e-3, None),
        ("sftkit kernel = flex attention (bf16, 2%)", "135m lora bf16 sftkit kernel", "135m lora bf16 packed",
         0.02, None),
    ]:
        if a not in by_name or b not in by_name:
            continue
        la, lb = losses(a), losses(b)
        if not la or not lb:
            out.append((label, False, "a run failed"))
            continue
        ok, worst = _close(la, lb, rel, first)
        out.append((label, ok, f"largest relative difference {worst:.2e}"))
    for name, job in by_name.items():
        if job.result.get("returncode") not in (0, None):
            out.append((f"run {name}", False, job.result.get("error", "")[-300:].replace("\n", " ")))
    fsdp = next((j for j in by_name.values() if j.launcher), None)
    if fsdp is not None and fsdp.result.get("losses"):
        resumed = fsdp.result.get("resumed_last_loss")
        ok = resumed is not None and abs(resumed - fsdp.result["losses"][-1]) <= 1e-3 * abs(fsdp.result["losses"][-1])
        ok = ok and fsdp.result.get("resumed_adapter", False)
        out.append(("FSDP2 resume retraces the run and exports the adapter", ok,
                    f"resumed {resumed} vs {fsdp.result['losses'][-1]}" if resumed is not None
                    else fsdp.result.get("resume_error", "")[-300:].replace("\n", " ")))
    if evaluation:
        ok = evaluation.get("returncode") == 0 and evaluation.get("rows") == 64 and all(
            m["tokens"] > 0 for m in evaluation.get("models", {}).values())
        out.append(("eval generates on the device for every row", ok,
                    f"{evaluation.get('rows')} rows, {evaluation.get('models')}" if ok else
                    evaluation.get("error", "")[-300:].replace("\n", " ")))
    return out


def print_table(job_list: list[Job], results: list[tuple[str, bool | None, str]], evaluation: dict) -> None:
    header = ("run", "steps", "s", "tok/s", "trained tok/s", "peak GPU GB", "first loss", "last loss", "attention")
    rows = []
    for job in job_list:
        r, s = job.result, job.result.get("summary", {})
        if not r:
            rows.append((job.name, "-", "-", "-", "-", "-", "-", "-", "skipped (time budget)"))
            continue
        rows.append((job.name, s.get("steps", "-"), r.get("seconds", "-"), s.get("tokens_per_s", "-"),
                     s.get("trained_tokens_per_s", "-"), s.get("peak_gpu_memory_gb", "-"),
                     f"{s['first_loss']:.4f}" if s.get("first_loss") is not None else "FAILED",
                     f"{s['final_loss']:.4f}" if s.get("final_loss") is not None else "-", s.get("attention", "-")))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for line in [header, tuple("-" * w for w in widths), *rows]:
        say(" | ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    if evaluation:
        say(f"\neval (generation, 64 rows, batch 32, 8 new tokens): {json.dumps(evaluation)[:400]}")
    say("")
    for label, ok, detail in results:
        say(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")


def environment() -> dict:
    import importlib.metadata as md
    import importlib.util

    import torch

    info = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "flash-attn"):
        try:
            info[package] = md.version(package)
        except md.PackageNotFoundError:
            info[package] = None
    info["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16"] = torch.cuda.is_bf16_supported(including_emulation=False)
    info["flex_attention"] = importlib.util.find_spec("torch.nn.attention.flex_attention") is not None
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", metavar="DIR", help="download the wheels and copy the tokenizer into DIR, then stop")
    parser.add_argument("--cpu-smoke", action="store_true", help="the same flow with tiny models on the CPU")
    parser.add_argument("--tokenizer", metavar="DIR", help="the SmolLM2 tokenizer folder")
    parser.add_argument("--work", metavar="DIR", default=os.environ.get("SFTKIT_GPU_CHECK_DIR", "/tmp/sftkit-gpu-check"))
    args = parser.parse_args(argv)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")  # the GPU machine reaches no hub
    if args.bundle:
        return make_bundle(Path(args.bundle))
    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        say("gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing ran. "
            "Run it on a CUDA machine (see GPU_NOTES.md).")
        return 0
    began = time.time()
    smoke = args.cpu_smoke
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    info = environment()
    say("gpu-check environment: " + json.dumps(info))
    device = "cpu" if smoke else "cuda"
    folders = build_models(work, tokenizer_folder(args.tokenizer), SMOKE_SHAPES if smoke else SHAPES, device)
    env = {**os.environ, "SFTKIT_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "SFTKIT_DATA_CACHE": str(work / "encoded")}
    job_list = jobs(bool(info.get("bitsandbytes")) and not smoke, smoke)
    for job in job_list:
        left = BUDGET_S - (time.time() - began)
        if left <= 0:
            break
        say(f"== {job.name}")
        run_job(job, folders, work, env, [], timeout=min(180.0, left + 40))
        say(f"   {job.result.get('seconds')} s, exit {job.result.get('returncode')}"
            + (f", losses {[round(x, 4) for x in job.result.get('losses', [])]}" if job.result.get("losses") else ""))
    by_name = {j.name: j for j in job_list if j.result}
    trained = by_name.get("135m lora bf16 packed")
    evaluation = {}
    if trained and trained.result.get("returncode") == 0:
        say("== eval")
        evaluation = run_eval(work, Path(trained.result["out"]), env, device, timeout=60 if not smoke else 300)
    results = checks(by_name, evaluation)
    print_table(job_list, results, evaluation)
    report = {"environment": info, "seconds": round(time.time() - began, 1), "smoke": smoke,
              "runs": {j.name: {k: v for k, v in j.result.items() if k != "out"} for j in job_list},
              "eval": evaluation, "checks": [{"check": c, "passed": ok, "detail": d} for c, ok, d in results]}
    target = Path(os.environ["OUT"]) if os.environ.get("OUT") else work
    target.mkdir(parents=True, exist_ok=True)
    (target / "gpu_check.json").write_text(json.dumps(report, indent=2), "utf-8")
    say(f"\ngpu-check: {sum(1 for _, ok, _ in results if ok)} of {len(results)} checks passed in "
        f"{time.time() - began:.0f} s; {target / 'gpu_check.json'}")
    return 0 if results and all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
