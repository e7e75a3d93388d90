"""The whole extension surface of sftkit: one ``register_<kind>(register)`` hook per kind.

Every hook receives ``register(component, name=None)``. A component is a callable; its name is
``name`` or its ``__name__``; the first line of its docstring is its help text; its keyword
parameters are the options a user may set (``--option key=value``, recipe YAML). Built-in
plugins in ``sftkit.plugins`` use exactly these hooks.

Hook evolution policy: hooks only gain arguments (pluggy lets an implementation accept fewer),
and a hook due for removal first warns through pluggy's ``warn_on_impl`` for a release.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("sftkit")
hookimpl = pluggy.HookimplMarker("sftkit")

KINDS = ("loaders", "templates", "masking_strategies", "validators", "metrics", "reporters", "generators")

# The optional attributes of a component, by kind: sftkit reads these and no others, a bound
# component carries them, and the README's hook reference lists them (generated from here).
OPTIONAL_ATTRIBUTES: dict[str, dict[str, str]] = {
    "loaders": {
        "suffixes": "file suffixes it reads, e.g. `(\".jsonl\",)`: sftkit picks it from the file name",
        "matches": "`matches(path) -> bool`: sftkit picks it for the paths it accepts (e.g. a folder layout)",
    },
    "templates": {
        "markers": "the delimiter strings it renders, each written as it appears in context, leading space "
                   "included (`\"### Response:\"` at a line start, `\" ASSISTANT:\"` after a space): the content "
                   "check (`consistency`) looks for them stripped inside fields, the `tokenization` check compares "
                   "their tokens where the template renders them with their tokens alone",
        "special_tokens": "delimiters to add to the tokenizer as special tokens with `--add-special-tokens`",
        "jinja": "a Jinja chat template equivalent to the rendering, saved as the `chat_template` of trained "
                 "models: a string, or `jinja(**options) -> str | None` called with the template's options (its "
                 "defaults, then those set), for templates whose options change the text (a system prompt)",
    },
    "masking_strategies": {
        "default": "`True` on the one strategy used when none is chosen (the built-in `completion_only`)",
        "encoder_decoder": "`False` on a strategy that trains prompt tokens (the built-in `full` and "
                           "`prompt_weighted`): refused for an encoder-decoder model, whose encoder input never trains",
    },
    "validators": {
        "codes": "`{code: (severity, what it means, how to fix)}`: every issue code it yields; the README's "
                 "issue-code table is generated from these, and `--severity CODE=...` checks codes against them",
    },
    "metrics": {
        "aggregate": "`aggregate(predictions, references, **options) -> dict[str, float]`: the corpus "
                     "aggregate when it is not the mean of the per-example scores (corpus BLEU)",
        "resampled": "`resampled(predictions, references, indices, **options) -> dict[str, array]`: the "
                     "aggregate on each bootstrap resample, for when calling `aggregate` per resample is slow; "
                     "`indices` is a 2-D numpy int array of shape (resamples, examples), each row the example "
                     "indices of one resample (drawn with replacement); return one value per row for each "
                     "sub-metric of `aggregate`. For corpus BLEU, chrF or TER, "
                     "`sftkit.corpus.resampled_corpus_score(metric, predictions, references, indices)` computes it "
                     "from sacrebleu's statistics",
        "describe": "`describe(**options) -> dict[str, str]`: what the metric computed, for the reader: each "
                    "key and value is one setting row in the report and in eval.json `metric_info.<metric>` "
                    "(beside `options`); by convention `definition` (one line: what the number means, and that "
                    "it is a corpus score or a mean) and `signature` (a reproducibility string such as "
                    "sacrebleu's); any other key is shown as is (BLEU: `signature`; exact_match: `mode`)",
        "input": "`\"label\"`: for classification data, score the output mapped to the spec's labels, "
                 "not the raw text",
        "default_for": "`{task: position}`: a default metric for these tasks (`classification`, `summarization`, "
                       "`qa`, `generation`), ordered by position, when `--metrics` is not given",
        "headline": "sub-metric names that headline a report's summary (default: the first sub-metric of "
                    "the first metric)",
    },
    "reporters": {
        "default": "`True`: it runs when no `--reporter` is given (the built-in `json` and `html` declare it); a "
                   "reporter without it runs only when named with `--reporter`",
    },
    "generators": {
        "default": "`True` on the one generator used when no `--generator` is given (the built-in `hf`)",
        "available": "`available() -> str | None`: why it cannot run here (a missing library, no GPU), or None; "
                     "sftkit asks before any model loads and exits 2 with the reason",
        "version": "`version() -> str`: what generates, with its version (`transformers 4.56.1`), recorded in "
                   "eval.json",
        "loads_model": "`True`: the generator loads the weights itself (vLLM); its `model` argument is then a "
                       "`sftkit.generate.ModelSource` (name, base model, adapter folder, device) instead of a "
                       "loaded transformers model",
    },
}


@hookspec
def register_loaders(register):
    """Register readers of a file or folder into records.

    A loader is ``loader(path: pathlib.Path, **options) -> Iterable[dict]``. It yields one dict
    per record, lazily where it can, and raises ``sftkit.DataError`` naming the file and line
    or row on malformed input. A loader that takes an option ``skip_invalid`` supports
    ``--skip-invalid``: when it is true, it yields the ``DataError`` of a broken line or record
    (instead of raising it) and goes on.
    """


@hookspec
def register_templates(register):
    """Register prompt templates that render an example into role-tagged segments.

    A template is ``template(example: Example, context: RenderContext, **options) ->
    list[Segment]``. The joined segment texts are the training text; the final assistant
    turn ends with an ``end`` segment (the EOS or end-of-turn text). ``example.turns()``
    gives every example as messages: a conversation's own, or for single-turn data an
    optional system message (``example.system``), one user message whose content is
    ``instruction + "\\n\\n" + input`` (the instruction alone without an input, the input
    alone without an instruction; ``example.prompt_text()``), and one assistant message
    (``example.output``). A template that wants the fields apart reads ``example.instruction``
    and ``example.input`` directly.
    """


@hookspec
def register_masking_strategies(register):
    """Register masking strategies that choose which segments train, and with what weight.

    A masking strategy is ``strategy(segments: list[Segment], **options) -> list[float]``:
    one loss weight per segment, 0 for masked (labels -100) and 1 for fully trained.
    """


@hookspec
def register_validators(register):
    """Register dataset validators.

    A validator is ``validator(context: ValidationContext, **options) -> Iterable[Issue]``.
    It reads ``context.examples`` (and the tokenizer, template, eval data where present),
    may add figures to ``context.stats[name]``, and yields ``sftkit.Issue`` objects with
    stable codes and 0-based row indices.
    """


@hookspec
def register_metrics(register):
    """Register evaluation metrics.

    A metric is ``metric(predictions: list[str], references: list[str], **options) ->
    dict[str, list[float]]``: one score per example under each sub-metric name (e.g.
    ``{"rouge1": [...], "rouge2": [...]}``). sftkit aggregates and bootstraps them. For
    classification data, a metric with an option ``labels`` receives the spec's label list
    there unless the user sets it.
    """


@hookspec
def register_reporters(register):
    """Register reporters that write a result somewhere.

    A reporter is ``reporter(result: Result, output_dir: pathlib.Path, **options) ->
    pathlib.Path | None``. ``result.kind`` is "validate", "train" or "eval"; a reporter that
    does not handle a kind returns None. ``result.data`` follows the kind's JSON Schema
    (``sftkit/schemas/<kind>-<version>.json``, its version in ``data["schema_version"]``).
    Files are written atomically (``sftkit.io.atomic_write_text``), inside ``output_dir``,
    and named after the result kind (``eval.csv``, ``eval-examples.csv``) or after the
    reporter itself (``csv-eval.txt``), so two reporters never write the same file.

    Which reporters run: those named with ``--reporter NAME[,NAME]`` (the recipe key
    ``reporters`` for train), else every reporter that declares ``default = True``; minus
    those named with ``--no-reporter NAME`` (``no_reporters``). An unknown name exits 2
    before any work starts.
    """


@hookspec
def register_generators(register):
    """Register generators: how ``sftkit eval`` turns prompts into outputs.

    A generator is ``generator(model, tokenizer, prompt_ids, stops, max_new_tokens, **options)
    -> list[Generation]``: greedy outputs for the already tokenized prompts (``prompt_ids``, a
    list of token-id lists, tokenized as in training), one ``sftkit.generate.Generation`` per
    prompt and in their order. Each output stops at the ids of ``stops.token_ids`` (EOS and a
    one-token end of turn), at the texts of ``stops.strings``, or after ``max_new_tokens`` new
    tokens; its text and ids are cut before the stop, and ``stopped`` says why
    (``sftkit.generate.finish(tokenizer, new_ids, stops, max_new_tokens)`` builds one from the
    new ids). A generator that declares an option ``batch_size`` or ``max_batch_tokens``
    receives ``--batch-size`` and ``--max-batch-tokens`` there. Greedy outputs must equal
    one-at-a-time decoding (``sftkit.testing.check_generator``).
    """
