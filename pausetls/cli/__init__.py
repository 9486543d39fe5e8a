"""The ``pausetls`` command (``main.py``) and its ``bench`` subcommand."""
