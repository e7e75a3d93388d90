"""sftkit's built-in plugins. Each module is an ordinary plugin using only the public API."""
