"""Training recipes: a YAML file of settings, merged with command-line flags (flags win).

Every key, its type, its allowed values and its default are declared once, as the fields of
``Recipe``; each value from the file or a flag is checked by value as well as type before any
work starts (``sftkit.options``, pydantic): an unknown key, a wrong type or a value out of range
is one clear message naming the file and key (or the flag), the value and what is allowed
(exit 2). A recipe hands the data path its two value objects: ``reading`` (a ``DataRequest``) and
``rendering`` (a ``RenderSettings``).
"""
from __future__ import annotations

import difflib
import functools
import math
import os
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import MinLen  # constraints pydantic reads (sftkit.options), light to import

from sftkit.errors import DataError, UsageError

MAX_STEPS = 10**8  # optimizer steps: a run longer than this never ends usefully (a typo, not a plan)
MAX_TOKENS = 10**7  # tokens per example or per forward pass
MAX_WEIGHT = 10**4  # a data weight: each example this many times per epoch


@dataclass
class DataSource:
    """One training file, its sampling weight (multi-task mixing) and optionally its own spec."""

    path: str
    weight: float = 1.0
    spec: str | None = None


def key(default: Any = None, doc: str = "", *, factory: Any = None, **allowed: Any) -> Any:
    """A recipe key: its default (or default factory), what it means, and its allowed values as
    pydantic ``Field`` constraints (``ge=0, le=1``, ``min_length=1``); the README table shows them."""
    metadata = {"doc": doc, "allowed": allowed}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


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
        'dataset spec of the data (built-in name or YAML path); a data entry may carry its own', min_length=1)
    columns: dict[str, str] = key(doc='canonical field -> source column, as `--column`', factory=dict)
    instruction: str | None = key(None, 'a constant instruction for data that has none')
    loader: str | None = key(None, 'loader name (default: from the file suffix)', min_length=1)
    loader_options: dict[str, Any] = key(doc='loader options, as `--loader-option`', factory=dict)
    skip_invalid: bool = key(
        False,
        'skip broken lines of the training and eval files (they are listed) instead of stopping')
    eval_data: str | None = key(
        None,
        "held-out file for the eval loss (read with the recipe's spec, else the first source's)", min_length=1)
    model: str = key(
        'smollm2-135m',
        'base model: an offline name (`smollm2-135m`, `tiny-random`, `tiny-random-t5`, ...), a folder or a hub id '
        '(causal LM or encoder-decoder)', min_length=1)
    template: str | None = key(None, "prompt template (default: the spec's)", min_length=1)
    template_options: dict[str, Any] = key(doc='template options, as `--template-option`', factory=dict)
    masking: str | None = key(
        None,
        'masking strategy (default: the one that declares itself the default, `completion_only`)', min_length=1)
    masking_options: dict[str, Any] = key(doc='masking options, as `--masking-option`', factory=dict)
    max_length: int = key(1024, 'truncate examples to this many tokens', ge=1, le=MAX_TOKENS)
    max_source_length: int | None = key(
        None, 'encoder-decoder models (T5): truncate the encoder input (the prompt) to this many tokens '
        '(default: `max_length`)', ge=1, le=MAX_TOKENS)
    max_target_length: int | None = key(
        None, 'encoder-decoder models (T5): truncate the decoder target (the response and its end token) to this '
        'many tokens (default: `max_length`)', ge=1, le=MAX_TOKENS)
    add_special_tokens: bool = key(
        False,
        "add the template's delimiters as tokens; the embeddings grow (with LoRA the input and output embeddings, "
        '`embed_tokens`/`lm_head` in Llama, are trained and saved via `modules_to_save`, kept tied where the model '
        'ties them)')
    method: Literal["lora", "full"] = key("lora", '`lora` (a LoRA adapter) or `full` (every weight)')
    lora_r: int = key(16, 'LoRA rank', ge=1, le=4096)
    lora_alpha: int = key(32, 'LoRA alpha (the update is scaled by alpha / r)', ge=1, le=2**16)
    lora_dropout: float = key(0.0, 'LoRA dropout (0 by default: it costs seconds per step on CPU)', ge=0, lt=1)
    target_modules: list[Annotated[str, MinLen(1)]] = key(
        doc='LoRA target modules: `all-linear` (every linear layer except the output head, whatever the architecture '
        'calls them) or module names (`q_proj,v_proj`; GPT-2: `c_attn`)', factory=lambda: list(DEFAULT_TARGETS),
        min_length=1)
    epochs: float = key(1.0, 'length of training in epochs (`max_steps` wins)', gt=0, le=10**4)
    max_steps: int | None = key(None, 'optimizer steps (overrides `epochs`)', ge=1,
                                le=MAX_STEPS)
    lr: float | None = key(None, 'AdamW learning rate (default by method: 2e-4 LoRA, 2e-5 full)', gt=0, le=1)
    batch_size: int = key(8, 'examples per micro-batch and process', ge=1, le=4096)
    grad_accum: int = key(1, 'micro-batches per optimizer step', ge=1, le=1024)
    warmup_ratio: float = key(0.05, 'share of the steps spent warming the learning rate up', ge=0, le=1)
    scheduler: Literal["cosine", "linear", "constant"] = key(
        "cosine", 'learning-rate schedule: `cosine`, `linear` or `constant`')
    weight_decay: float = key(0.0, 'AdamW weight decay', ge=0)
    max_grad_norm: float = key(1.0, 'clip the gradient norm to this (0: no clipping)', ge=0)
    seed: int = key(42, 'seed of the data order, the mixing and the LoRA initialisation', ge=0, le=2**32 - 1)
    packing: bool = key(
        True,
        'padding-free packing with attention kept inside each example; off: right-padded batches')
    max_tokens_per_forward: int | None = key(
        1024,
        'a micro-batch runs as forward/backward passes of at most this many tokens whose gradients add up: '
        'the same step with bounded activation memory', ge=1, le=MAX_TOKENS)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = key(
        'auto',
        '`auto`: bf16 on GPUs that support it natively (else fp16), fp32 on CPU; or `fp32`, `bf16`, `fp16`. '
        'The frozen weights load in this dtype straight onto each process\'s GPU (a LoRA base in bf16 takes '
        'half the memory of fp32), trainable weights (LoRA adapters, and every weight with `full`) stay fp32, '
        'and the forward pass runs under autocast in it')
    gradient_checkpointing: bool = key(
        False,
        "recompute each layer's activations in the backward pass (non-reentrant; with packing, LoRA and full): "
        'activation memory of about one layer instead of all of them, for one more forward pass of each layer')
    quantize: Literal["4bit", "8bit"] | None = key(
        None,
        '`4bit` (QLoRA: bitsandbytes NF4 with double quantization and bf16 compute) or `8bit`: the frozen base '
        'loads quantized and LoRA trains on top; needs a CUDA GPU and the bitsandbytes package')
    attention: Literal["auto", "sftkit", "flex_attention", "flash_attention_2", "flash_attention_3"] = key(
        'auto',
        'attention kernel for packed batches: `auto` = on CUDA `flash_attention_3` or `flash_attention_2` '
        '(varlen) when flash-attn is installed, else `flex_attention` (block-diagonal causal mask); on CPU '
        "`sftkit` (SDPA per example); or name one of them. Padded batches use the model's own")
    num_proc: int | None = key(
        None,
        'processes that tokenize the training data when it is not validated first (default: one per CPU core, '
        'at most 8, once there are at least two chunks of 1,024 rows)', ge=1, le=256)
    data_cache: bool = key(
        True,
        'keep the encoded training data in an Arrow cache (`$SFTKIT_DATA_CACHE`, default '
        '`~/.cache/sftkit/encoded`), memory-mapped by every process and reused by the next run with the same '
        'file, tokenizer, template, masking and max length')
    eval_steps: int | None = key(None, 'eval loss every N steps (and at the end) when `eval_data` is given', ge=1,
                                 le=MAX_STEPS)
    early_stopping_patience: int | None = key(
        None,
        'stop after N evaluations without a better eval loss (the run keeps the last weights, not the best)',
        ge=1, le=MAX_STEPS)
    save_steps: int = key(100, 'checkpoint every N steps', ge=1, le=MAX_STEPS)
    save_total_limit: int = key(2, 'checkpoints kept (the newest)', ge=1, le=10**4)
    logging_steps: int = key(1, 'a metrics line every N steps', ge=1, le=MAX_STEPS)
    report_to: list[str] = key(
        doc='experiment trackers that receive loss, learning rate, grad norm, tokens/s, eval loss and the recipe '
        '(`tensorboard`, `wandb`, `mlflow`, `comet_ml`, `aim`, `clearml`, `dvclive`, `swanlab`, `trackio`, through '
        "accelerate's tracker classes; TensorBoard event files go to `<run folder>/tensorboard/`); none by default "
        '(metrics.jsonl and the reports only)',
        factory=list)
    output_dir: str | None = key(
        None,
        'run folder (default `runs/<first data file>-<method>`); an existing run needs `--resume` or '
        '`--overwrite`', min_length=1)
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

    # where each key's value came from when a recipe file set it (``the recipe r.yaml, key
    # loader_options``), for messages about component options; set by ``build_recipe``
    origins: ClassVar[dict[str, str]] = {}

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
                           loader=self.loader, loader_options=dict(self.loader_options), skip_invalid=self.skip_invalid,
                           options_from=self.origins.get("loader_options", ""))

    @cached_property
    def rendering(self) -> Any:
        """How the run renders, masks and tokenizes (``sftkit.pipeline.RenderSettings``)."""
        from sftkit.pipeline import RenderSettings

        return RenderSettings(template=self.template, template_options=dict(self.template_options),
                              masking=self.masking, masking_options=dict(self.masking_options), model=self.model,
                              max_length=self.max_length, max_source_length=self.max_source_length,
                              max_target_length=self.max_target_length, add_special_tokens=self.add_special_tokens,
                              trust_remote_code=self.trust_remote_code,
                              options_from={k: v for k, v in self.origins.items()
                                            if k in ("template_options", "masking_options")})

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


DEFAULT_TARGETS = ("all-linear",)  # PEFT's shorthand: every linear layer except the output head, any architecture
ATTENTION = typing.get_args(typing.get_type_hints(Recipe)["attention"])  # the kernels `--attention` offers
KEYS = tuple(f.name for f in fields(Recipe))
MAPPINGS = ("columns", "loader_options", "template_options", "masking_options")
# the flag that sets a key, where it is not --key-name
FLAGS = {"method": "--lora/--full", "validate": "--no-validate", "columns": "--column",
         "loader_options": "--loader-option", "template_options": "--template-option",
         "masking_options": "--masking-option"}
DATA_ALLOWED = (f"paths, `PATH:WEIGHT` strings or `{{path, weight, spec}}` mappings (at least one); a weight is a "
                f"number more than 0 and at most {MAX_WEIGHT}")


@functools.cache
def declarations() -> dict[str, Any]:
    """Every recipe key but ``data`` as a ``sftkit.options.Declared``: its type with the allowed
    values of its ``key(...)``, and its default."""
    from pydantic import Field

    from sftkit.options import Declared

    hints = typing.get_type_hints(Recipe, include_extras=True)
    out = {}
    for spec in fields(Recipe):
        if spec.name == "data":
            continue
        allowed = spec.metadata.get("allowed") or {}
        annotation = typing.Annotated[hints[spec.name], Field(**allowed)] if allowed else hints[spec.name]
        out[spec.name] = Declared(spec.name, annotation, _default(spec))
    return out


def _default(spec: Any) -> Any:
    return spec.default_factory() if spec.default is MISSING else spec.default


def allowed_values(key: str) -> str:
    """What a key's value must be, in words (``an integer from 1 to 4096``)."""
    return DATA_ALLOWED if key == "data" else declarations()[key].allowed


def recipe_doc(key: str) -> str:
    """What a recipe key means, with what it allows and its default: the help text of its ``sftkit train`` flag."""
    spec = next(f for f in fields(Recipe) if f.name == key)
    default = _default(spec)
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    doc = spec.metadata["doc"]
    allowed = f" ({allowed_values(key)})" if spec.metadata.get("allowed") else ""
    return doc[0].upper() + doc[1:] + allowed + (f" [{shown}]." if shown not in (None, [], {}, "") else ".")


def closest_key(key: str, keys=KEYS) -> str | None:
    """The valid key closest to ``key`` (or None)."""
    found = difflib.get_close_matches(key.replace("-", "_"), keys, n=1, cutoff=0.5)
    return found[0] if found else None


def parse_data_item(item: Any, source: str = "--data") -> DataSource:
    """``"path"``, ``"path:2"`` or ``{path, weight, spec}`` -> DataSource."""
    if isinstance(item, dict):
        unknown = set(item) - {"path", "weight", "spec"}
        if unknown or "path" not in item:
            raise UsageError(f"{source}: a data entry takes keys path, weight and spec, got {sorted(map(str, item))}")
        path, spec = item["path"], item.get("spec")
        if not isinstance(path, str) or not path:
            raise UsageError(f"{source}: the path of a data entry must be non-empty text, got {_shown(path)}")
        if spec is not None and (not isinstance(spec, str) or not spec):
            raise UsageError(f"{source}: the spec of {path} must be a name or a path, got {_shown(spec)}")
        return DataSource(path, _weight(item.get("weight", 1.0), f"{source} weight of {path}"), spec)
    if not isinstance(item, str) or not item:
        raise UsageError(f"{source}: expected a path or PATH:WEIGHT, got {_shown(item)}")
    path, sep, weight = item.rpartition(":")
    if sep and path and _looks_like_number(weight) and not Path(item).exists():
        return DataSource(path, _weight(weight, f"{source} weight of {path}"))
    return DataSource(item)


def _shown(value: Any) -> str:
    from sftkit.options import shown

    return shown(value)


def _looks_like_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _weight(value: Any, what: str) -> float:
    """A data weight: a finite number more than 0 and at most ``MAX_WEIGHT``."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{what} must be a number, got {_shown(value)}") from None
    if not (math.isfinite(number) and 0 < number <= MAX_WEIGHT):
        raise UsageError(f"{what} must be a number more than 0 and at most {MAX_WEIGHT}, got {_shown(value)}",
                         hint="a weight of 2 shows each example twice per epoch, 0.5 half of them")
    return number


def _where(key: str, source: str) -> str:
    """How a message names a setting: ``r.yaml: batch_size`` or the flag ``--batch-size``."""
    if source == COMMAND_LINE:
        return FLAGS.get(key, "--" + key.replace("_", "-"))
    return f"{source}: {key}"


COMMAND_LINE = "command line"


def _check_value(key: str, value: Any, source: str) -> Any:
    """Check and coerce one setting (``sftkit.options``); a UsageError naming the source, the
    value and what is allowed."""
    from sftkit.options import ValueProblem

    where = _where(key, source)
    if key == "data":
        items = value if isinstance(value, list) else [value]
        return [parse_data_item(v, where) for v in items]
    if key in MAPPINGS and isinstance(value, dict):
        value = {str(k): v for k, v in value.items()}
    try:
        return declarations()[key].check(value, text_booleans=False)
    except ValueProblem as problem:
        spec = next(f for f in fields(Recipe) if f.name == key)
        raise UsageError(f"{where} {problem}", hint=f"{key}: {spec.metadata['doc']}") from None


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
    """Check keys and values (``source``: the recipe file, or ``COMMAND_LINE`` for flags); relative
    data paths in a recipe are resolved against its folder."""
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
    from sftkit.runs import refuse_non_folder

    settings = load_recipe_file(recipe_path) if recipe_path else {}
    origins = {k: f"the recipe {recipe_path}, key {k}" for k in settings}
    given = {k: v for k, v in flags.items() if v is not None and v != () and v != []}
    settings.update(check_settings(given, COMMAND_LINE))
    for k in given:
        origins.pop(k, None)
    recipe = Recipe(**settings)
    recipe.origins = origins
    if not recipe.data:
        raise UsageError("no training data", hint="pass --data PATH (repeatable, PATH:WEIGHT to mix) or set data: in the recipe")
    if recipe.method == "full" and "lora_r" in given:
        raise UsageError("--lora-r has no effect with --full")
    refuse_non_folder(recipe.run_dir())
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
    return yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True)


def _plain(value: Any) -> Any:
    """Data with command-line text (a ``str`` subclass YAML cannot write) as plain strings."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
