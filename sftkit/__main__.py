"""``python -m sftkit`` (also ``accelerate launch -m sftkit train ...``)."""
from sftkit.cli import main

main()
