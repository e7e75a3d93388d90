"""Built-in validators: schema, quality, consistency, balance, tokenization, leakage."""
from sftkit import hookimpl


@hookimpl
def register_validators(register):
    """The built-in validators."""
