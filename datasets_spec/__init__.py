"""Built-in dataset specs (YAML files), installed as ``sftkit.datasets_spec``."""
