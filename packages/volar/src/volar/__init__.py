"""volar: the command-line client of volantd."""

__version__ = "0.1.0"
