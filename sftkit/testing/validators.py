"""The conformance check of validators, and ``validation_context`` to call one directly."""
from __future__ import annotations

import copy
import json
from typing import Any, Callable, Iterable, Sequence

from sftkit.registry import get_registry
from sftkit.testing.common import CODE_PATTERN, Problems, call, start_check
from sftkit.testing.samples import sample_examples
from sftkit.types import SEVERITIES, Example, Issue


def validation_context(
    examples: Sequence[Example] | None = None,
    *,
    records: Sequence[dict] | None = None,
    spec: Any = "alpaca",
    tokenizer: Any = None,
    template: str | None = None,
    masking: str | None = None,
    eval_records: Sequence[dict] | None = None,
    max_length: int | None = 1024,
    template_options: dict | None = None,
) -> Any:
    """A ``ValidationContext`` as ``sftkit validate`` builds it, for calling a validator directly.

    Give raw ``records`` (dicts mapped through ``spec``, a built-in spec name or a DatasetSpec,
    exactly as validate maps them) or ready ``examples`` (default: ``sample_examples()``).
    ``tokenizer`` (the ``tokenizer`` fixture) enables the token checks; ``eval_records`` the
    train/eval leakage checks. ``template`` (a registered name: your plugin's once
    ``register_plugin`` added it; default the spec's) with ``template_options``, and
    ``masking`` render the rows as ``--template``/``--template-option``/``--masking`` would.
    """
    from sftkit.pipeline import Encoder
    from sftkit.spec import load_spec
    from sftkit.store import ExampleStore, load_store, record_shape
    from sftkit.validation import ValidationContext

    chosen = load_spec(spec) if isinstance(spec, str) else spec
    if records is not None:
        store = load_store(list(records), chosen)
    else:
        store, shapes = ExampleStore(), {}
        for example in examples if examples is not None else sample_examples():
            fields = ({"messages": [vars(m) for m in example.messages]} if example.is_conversation else
                      {"instruction": example.instruction, "input": example.input, "output": example.output})
            store.add(example, fields, record_shape(fields, shapes))
    eval_store = load_store(list(eval_records), chosen) if eval_records is not None else None
    template = template or chosen.default_template
    masking = masking or get_registry().default_name("masking_strategies")
    encoder = Encoder.build(template=template, masking=masking, tokenizer=tokenizer, max_length=max_length,
                            template_options=template_options)
    return ValidationContext(examples=store, spec=chosen, encoder=encoder, tokenizer=tokenizer, max_length=max_length,
                             eval_examples=eval_store, template_name=template, masking_name=masking)


def check_validator(
    validator: Any,
    context: Any = None,
    *,
    examples: Sequence[Example] | None = None,
    options: dict | None = None,
) -> list[Issue]:
    """Check a validator yields well-formed ``sftkit.Issue`` objects.

    Checked: each issue has a snake_case code, a known severity, a message, 0-based ``rows``
    within the dataset and JSON-serialisable details; the same issues come back twice; the
    examples are not modified. Pass your own ``context`` (or ``examples``) to trigger issues.
    Returns the issues.
    """
    component, problems, bound = start_check("validators", validator, options)
    if context is None:
        context = validation_context(examples if examples is not None else sample_examples())
    before = copy.deepcopy(list(context.examples))
    issues = _run_validator(bound, context, problems)
    count = len(context.examples)
    for issue in issues or []:
        if not isinstance(issue, Issue):
            problems.add(f"yielded a {type(issue).__name__}, expected sftkit.Issue")
            continue
        what = f"issue {issue.code!r}"
        if issue.validator != component.name:
            problems.add(f"{what}: Issue.validator is {issue.validator!r}; it must be the validator's name "
                         f"{component.name!r} (reports group issues by it)")
        if not isinstance(issue.code, str) or not CODE_PATTERN.match(issue.code):
            problems.add(f"{what}: code must be a stable snake_case word")
        if issue.severity not in SEVERITIES:
            problems.add(f"{what}: severity {issue.severity!r} is not one of {', '.join(SEVERITIES)}")
        if not isinstance(issue.message, str) or not issue.message.strip():
            problems.add(f"{what}: message must be a non-empty string")
        if not all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < count for r in issue.rows):
            problems.add(f"{what}: rows must be 0-based indices below {count}, got {issue.rows!r}")
        try:
            json.dumps(issue.to_dict(), allow_nan=False)
        except (TypeError, ValueError) as exc:
            problems.add(f"{what}: not JSON-serialisable for reports ({exc})")
    if list(context.examples) != before:
        problems.add("the validator modified the examples")
    if issues is not None:
        again = _run_validator(bound, context, problems)
        if again is not None and [i.to_dict() for i in again if isinstance(i, Issue)] != \
                [i.to_dict() for i in issues if isinstance(i, Issue)]:
            problems.add("two runs on the same data gave different issues (a validator must be deterministic)")
    problems.check()
    return list(issues or [])


def _run_validator(bound: Callable, context: Any, problems: Problems) -> list | None:
    ok, result = call(problems, "validating", bound, context)
    if not ok:
        return None
    if result is None:
        return []
    if isinstance(result, (str, bytes, dict)) or not isinstance(result, Iterable):
        problems.add(f"returned {type(result).__name__}, expected an iterable of sftkit.Issue")
        return None
    ok, issues = call(problems, "iterating the issues", list, result)
    return issues if ok else None
