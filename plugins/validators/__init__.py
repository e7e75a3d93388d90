"""Built-in validators: schema, quality, consistency, balance, tokenization, leakage.

Each is ``validator(context: sftkit.validation.ValidationContext, **options) -> Iterable[Issue]``;
the keyword options are its thresholds (set them in a spec's ``validators:`` or with
``--validator-option NAME.KEY=VALUE``). Issue codes are stable and documented in the README.
"""
from sftkit import hookimpl
from sftkit.plugins.validators.balance import balance
from sftkit.plugins.validators.consistency import consistency
from sftkit.plugins.validators.leakage import leakage
from sftkit.plugins.validators.quality import quality
from sftkit.plugins.validators.schema import schema
from sftkit.plugins.validators.tokenization import tokenization

BUILTIN = (schema, quality, consistency, balance, tokenization, leakage)


@hookimpl
def register_validators(register):
    """The built-in validators."""
    for validator in BUILTIN:
        register(validator)
