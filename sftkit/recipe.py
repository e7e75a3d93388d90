"""Training recipes: a YAML file of settings, merged with command-line flags (flags win).

Every key, its type and its default are declared once, as the fields of ``Recipe``; an unknown
key or a wrong type is one clear message naming the closest valid key (exit 2). A recipe hands
the data path its two value objects: ``reading`` (a ``DataRequest``) and ``rendering`` (a
``RenderSettings``).
"""
from __future__ import annotations

import difflib
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from sftkit.errors import DataError, UsageError


@dataclass
class DataSource:
    """One training file, its sampling weight (multi-task mixing) and optionally its own spec."""

    path: str
    weight: float = 1.0
    spec: str | None = None


def key(default: Any = None, doc: str = "", *, factory: Any = None) -> Any:
    """A recipe key: its default (or default factory) and what it means (the README table says it)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class Recipe:
    """All settings of a training run (see the README's recipe table)."""

    data: list[DataSource] = key(
        doc='training files (`--data PATH[:WEIGHT]`, repeatable; in a recipe a list of paths, `PATH:WEIGHT` '
        'strings or `{path, weight, spec}`); per epoch source *i* contributes round(weight x size) examples '
        '(weight 2 = each example twice), shuffled together with the seed',
        factory=list)
    spec: str | None = key(
        None,
        'dataset spec of the data (built-in name or YAML path); a data entry may carry its own')
    columns: dict[str, str] = key(doc='canonical field -> source column, as `--column`', factory=dict)
    instruction: str | None = key(None, 'a constant instruction for data that has none')
    loader: str | None = key(None, 'loader name (default: from the file suffix)')
    loader_options: dict[str, Any] = key(doc='loader options, as `--loader-option`', factory=dict)
    skip_invalid: bool = key(
        False,
        'skip broken lines of the training and eval files (they are listed) instead of stopping')
    eval_data: str | None = key(
        None,
        "held-out file for the eval loss (read with the recipe's spec, else the first source's)")
    model: str = key(
        'smollm2-135m',
        'base model: an offline name (`smollm2-135m`, `tiny-random`), a folder or a hub id')
    template: str | None = key(None, "prompt template (default: the spec's)")
    template_options: dict[str, Any] = key(doc='template options, as `--template-option`', factory=dict)
    masking: str | None = key(
        None,
        'masking strategy (default: the one that declares itself the default, `completion_only`)')
    masking_options: dict[str, Any] = key(doc='masking options, as `--masking-option`', factory=dict)
    max_length: int = key(1024, 'truncate examples to this many tokens')
    add_special_tokens: bool = key(
        False,
        "add the template's delimiters as tokens; the embeddings grow (with LoRA `embed_tokens`/`lm_head` are"
        ' trained and saved via `modules_to_save`, kept tied where the model ties them)')
    method: str = key("lora", '`lora` (a LoRA adapter) or `full` (every weight)')
    lora_r: int = key(16, 'LoRA rank')
    lora_alpha: int = key(32, 'LoRA alpha (the update is scaled by alpha / r)')
    lora_dropout: float = key(0.0, 'LoRA dropout (0 by default: it costs seconds per step on CPU)')
    target_modules: list[str] = key(doc='LoRA target modules (by name)', factory=lambda: list(DEFAULT_TARGETS))
    epochs: float = key(1.0, 'length of training in epochs (`max_steps` wins)')
    max_steps: int | None = key(None, 'optimizer steps (overrides `epochs`)')
    lr: float | None = key(None, 'AdamW learning rate (default by method: 2e-4 LoRA, 2e-5 full)')
    batch_size: int = key(8, 'examples per micro-batch and process')
    grad_accum: int = key(1, 'micro-batches per optimizer step')
    warmup_ratio: float = key(0.05, 'share of the steps spent warming the learning rate up')
    scheduler: str = key("cosine", 'learning-rate schedule: `cosine`, `linear` or `constant`')
    weight_decay: float = key(0.0, 'AdamW weight decay')
    max_grad_norm: float = key(1.0, 'clip the gradient norm to this (0: no clipping)')
    seed: int = key(42, 'seed of the data order, the mixing and the LoRA initialisation')
    packing: bool = key(
        True,
        'padding-free packing with attention kept inside each example; off: right-padded batches')
    max_tokens_per_forward: int | None = key(
        1024,
        'a micro-batch runs as forward/backward passes of at most this many tokens whose gradients add up: '
        'the same step with bounded activation memory')
    precision: str = key(
        'auto',
        '`auto`: bf16 on GPUs that support it natively (else fp16), fp32 on CPU; or `fp32`, `bf16`, `fp16`. '
        'The frozen weights load in this dtype straight onto each process\'s GPU (a LoRA base in bf16 takes '
        'half the memory of fp32), trainable weights (LoRA adapters, and every weight with `full`) stay fp32, '
        'and the forward pass runs under autocast in it')
    gradient_checkpointing: bool = key(
        False,
        "recompute each layer's activations in the backward pass (non-reentrant; with packing, LoRA and full): "
        'activation memory of about one layer instead of all of them, for one more forward pass of each layer')
    quantize: str | None = key(
        None,
        '`4bit` (QLoRA: bitsandbytes NF4 with double quantization and bf16 compute) or `8bit`: the frozen base '
        'loads quantized and LoRA trains on top; needs a CUDA GPU and the bitsandbytes package')
    attention: str = key(
        'auto',
        'attention kernel for packed batches: `auto` = on CUDA `flash_attention_3` or `flash_attention_2` '
        '(varlen) when flash-attn is installed, else `flex_attention` (block-diagonal causal mask); on CPU '
        "`sftkit` (SDPA per example); or name one of them. Padded batches use the model's own")
    num_proc: int | None = key(
        None,
        'processes that tokenize the training data when it is not validated first (default: one per CPU core, '
        'at most 8, once there are at least two chunks of 1,024 rows)')
    data_cache: bool = key(
        True,
        'keep the encoded training data in an Arrow cache (`$SFTKIT_DATA_CACHE`, default '
        '`~/.cache/sftkit/encoded`), memory-mapped by every process and reused by the next run with the same '
        'file, tokenizer, template, masking and max length')
    eval_steps: int | None = key(None, 'eval loss every N steps (and at the end) when `eval_data` is given')
    early_stopping_patience: int | None = key(
        None,
        'stop after N evaluations without a better eval loss (the run keeps the last weights, not the best)')
    save_steps: int = key(100, 'checkpoint every N steps')
    save_total_limit: int = key(2, 'checkpoints kept (the newest)')
    logging_steps: int = key(1, 'a metrics line every N steps')
    report_to: list[str] = key(
        doc='experiment trackers that receive loss, learning rate, grad norm, tokens/s, eval loss and the recipe '
        '(`tensorboard`, `wandb`, `mlflow`, `comet_ml`, `aim`, `clearml`, `dvclive`, `swanlab`, `trackio`, through '
        "accelerate's tracker classes; TensorBoard event files go to `<run folder>/tensorboard/`); none by default "
        '(metrics.jsonl and the reports only)',
        factory=list)
    output_dir: str | None = key(
        None,
        'run folder (default `runs/<first data file>-<method>`); an existing run needs `--resume` or '
        '`--overwrite`')
    overwrite: bool = key(False, 'replace a finished or interrupted run in the output folder')
    validate: bool = key(
        True,
        'run `sftkit validate` on the data first (`--no-validate` skips it); errors stop the run')
    trust_remote_code: bool = key(False, 'allow model code from the model folder')
    reporters: list[str] | None = key(
        None,
        'the reporters that write the run\'s reports (train.html, train.json; the validation reports when '
        'validation stops the run): `--reporter NAME[,NAME]`; default: every reporter that declares itself '
        'default-on (the built-in `json` and `html`)')
    no_reporters: list[str] = key(doc='reporters to leave out, as `--no-reporter NAME[,NAME]`', factory=list)

    def learning_rate(self) -> float:
        """The learning rate, defaulting by method."""
        if self.lr is not None:
            return self.lr
        return 2e-4 if self.method == "lora" else 2e-5

    def run_dir(self) -> str:
        """The output folder: as given, or ``runs/<first data file stem>-<method>``."""
        if self.output_dir:
            return self.output_dir
        return str(Path("runs") / f"{Path(self.data[0].path).stem}-{self.method}")

    @cached_property
    def reading(self) -> Any:
        """How every data file of the run is read (``sftkit.pipeline.DataRequest``, path unset)."""
        from sftkit.pipeline import DataRequest

        return DataRequest(spec=self.spec, columns=dict(self.columns), instruction=self.instruction,
                           loader=self.loader, loader_options=dict(self.loader_options), skip_invalid=self.skip_invalid)

    @cached_property
    def rendering(self) -> Any:
        """How the run renders, masks and tokenizes (``sftkit.pipeline.RenderSettings``)."""
        from sftkit.pipeline import RenderSettings

        return RenderSettings(template=self.template, template_options=dict(self.template_options),
                              masking=self.masking, masking_options=dict(self.masking_options), model=self.model,
                              max_length=self.max_length, add_special_tokens=self.add_special_tokens,
                              trust_remote_code=self.trust_remote_code)

    def data_request(self, source: DataSource) -> Any:
        """How to read one training file: its own spec, else the recipe's."""
        return self.reading.for_path(source.path, source.spec)

    def eval_request(self) -> Any:
        """How to read ``eval_data``: the recipe's spec, else the first training file's."""
        return self.reading.for_path(self.eval_data, self.spec or self.data[0].spec)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for recipe.yaml and sftkit_run.json)."""
        out = asdict(self)
        out["lr"] = self.learning_rate()
        return out


DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION = ("auto", "sftkit", "flex_attention", "flash_attention_2", "flash_attention_3")
CHOICES = {"method": ("lora", "full"), "scheduler": ("cosine", "linear", "constant"),
           "precision": ("auto", "fp32", "bf16", "fp16"), "quantize": ("4bit", "8bit"), "attention": ATTENTION}
POSITIVE = ("max_length", "lora_r", "lora_alpha", "batch_size", "grad_accum", "save_steps", "save_total_limit",
            "logging_steps", "max_steps", "eval_steps", "early_stopping_patience", "max_tokens_per_forward",
            "num_proc")
KEYS = tuple(f.name for f in fields(Recipe))


def recipe_doc(key: str) -> str:
    """What a recipe key means, with its default: the help text of its ``sftkit train`` flag."""
    spec = next(f for f in fields(Recipe) if f.name == key)
    default = spec.default_factory() if spec.default is MISSING else spec.default
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    doc = spec.metadata["doc"]
    return doc[0].upper() + doc[1:] + (f" [{shown}]." if shown not in (None, [], {}, "") else ".")


def closest_key(key: str, keys=KEYS) -> str | None:
    """The valid key closest to ``key`` (or None)."""
    found = difflib.get_close_matches(key.replace("-", "_"), keys, n=1, cutoff=0.5)
    return found[0] if found else None


def parse_data_item(item: Any, source: str = "--data") -> DataSource:
    """``"path"``, ``"path:2"`` or ``{path, weight, spec}`` -> DataSource."""
    if isinstance(item, dict):
        unknown = set(item) - {"path", "weight", "spec"}
        if unknown or "path" not in item:
            raise UsageError(f"{source}: a data entry takes keys path, weight and spec, got {sorted(item)}")
        spec = item.get("spec")
        if spec is not None and not isinstance(spec, str):
            raise UsageError(f"{source}: the spec of {item['path']} must be a name or a path")
        return DataSource(str(item["path"]), _number(item.get("weight", 1.0), f"{source} weight"), spec)
    if not isinstance(item, str) or not item:
        raise UsageError(f"{source}: expected a path or PATH:WEIGHT, got {item!r}")
    path, sep, weight = item.rpartition(":")
    if sep and path and _looks_like_number(weight) and not Path(item).exists():
        return DataSource(path, _number(weight, f"{source} weight of {path}"))
    return DataSource(item)


def _looks_like_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a number, got {value!r}") from None
    if not number > 0:
        raise UsageError(f"{what} must be positive, got {value!r}")
    return number


def _check_value(key: str, value: Any, source: str) -> Any:
    """Check (and lightly coerce) one setting; raise a clear UsageError."""
    spec = next(f for f in fields(Recipe) if f.name == key)
    kind = spec.type if isinstance(spec.type, str) else str(spec.type)
    where = f"{source}: {key}"

    def wrong(expected: str) -> UsageError:
        return UsageError(f"{where} must be {expected}, got {value!r} ({type(value).__name__})")

    if key == "data":
        items = value if isinstance(value, list) else [value]
        return [parse_data_item(v, where) for v in items]
    if value is None:
        if "None" in kind:
            return None
        raise wrong(kind)
    if kind.startswith("bool"):
        if isinstance(value, bool):
            return value
        raise wrong("true or false")
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        if key in POSITIVE and value < 1:
            raise UsageError(f"{where} must be at least 1, got {value}")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        if value < 0:
            raise UsageError(f"{where} must not be negative, got {value}")
        return float(value)
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise wrong("a string")
        if key in CHOICES and value not in CHOICES[key]:
            raise UsageError(f"{where} must be one of {', '.join(CHOICES[key])}, got {value!r}")
        return value
    if kind.startswith("dict"):
        if not isinstance(value, dict):
            raise wrong("a mapping (key: value)")
        return {str(k): v for k, v in value.items()}
    if kind.startswith("list"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong("a list of strings")
        return value
    raise AssertionError(f"unhandled recipe type {kind}")  # pragma: no cover


def load_recipe_file(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML (safe loader, no aliases) into a dict of checked settings."""
    from sftkit.spec import read_yaml_text, safe_yaml

    path = Path(path)
    if not path.exists():
        raise UsageError(f"recipe {path} does not exist", hint="pass a recipe YAML file, or use flags only")
    data = safe_yaml(read_yaml_text(path), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError("a recipe must be a mapping of settings (key: value)", path=str(path))
    return check_settings(data, str(path), base=path.parent)


def check_settings(settings: dict[str, Any], source: str, base: Path | None = None) -> dict[str, Any]:
    """Check keys and types; relative data paths in a recipe are resolved against its folder."""
    out = {}
    for key, value in settings.items():
        key = str(key)
        if key not in KEYS:
            near = closest_key(key)
            raise UsageError(f"{source}: unknown recipe key {key!r}" + (f"; did you mean {near!r}?" if near else ""),
                             hint="valid keys: " + ", ".join(KEYS))
        out[key] = _check_value(key, value, source)
    if base is not None:
        for item in out.get("data", []):
            item.path = _resolve(item.path, base)
            if item.spec and item.spec.endswith((".yaml", ".yml")):
                item.spec = _resolve(item.spec, base)
        for key in ("eval_data", "output_dir"):
            if isinstance(out.get(key), str):
                out[key] = _resolve(out[key], base)
        if isinstance(out.get("spec"), str) and out["spec"].endswith((".yaml", ".yml")):
            out["spec"] = _resolve(out["spec"], base)
    return out


def _resolve(path: str, base: Path) -> str:
    """A recipe-relative path, normalised (``demo/../runs/demo`` -> ``runs/demo``)."""
    candidate = Path(path).expanduser()
    return os.path.normpath(candidate if candidate.is_absolute() else (base / candidate))


def build_recipe(recipe_path: str | Path | None, flags: dict[str, Any]) -> Recipe:
    """The recipe file's settings, overridden by the flags the user gave (None = not given)."""
    settings = load_recipe_file(recipe_path) if recipe_path else {}
    given = {k: v for k, v in flags.items() if v is not None and v != () and v != []}
    settings.update(check_settings(given, "command line"))
    recipe = Recipe(**settings)
    if not recipe.data:
        raise UsageError("no training data", hint="pass --data PATH (repeatable, PATH:WEIGHT to mix) or set data: in the recipe")
    if recipe.method == "full" and "lora_r" in given:
        raise UsageError("--lora-r has no effect with --full")
    if recipe.quantize and recipe.method == "full":
        raise UsageError(f"quantize {recipe.quantize} trains LoRA adapters on a frozen quantized base; it cannot "
                         f"be combined with full fine-tuning", hint="drop --full (LoRA is the default), or drop --quantize")
    from sftkit.train.trackers import check_trackers

    recipe.report_to = check_trackers(recipe.report_to)  # a missing tracker package: one message, before any work
    return recipe


def recipe_yaml(recipe: Recipe) -> str:
    """The resolved recipe as YAML (written to the run folder)."""
    import yaml

    data = recipe.to_dict()
    data["data"] = [{"path": str(Path(d.path).resolve()), "weight": d.weight,
                     **({"spec": str(Path(d.spec).resolve()) if Path(d.spec).is_file() else d.spec} if d.spec else {})}
                    for d in recipe.data]
    for key in ("eval_data", "output_dir"):
        if data.get(key):
            data[key] = str(Path(data[key]).resolve())
    if data.get("spec") and Path(data["spec"]).is_file():
        data["spec"] = str(Path(data["spec"]).resolve())
    data.pop("overwrite", None)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
