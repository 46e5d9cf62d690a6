"""volantd: the Volant control plane."""

__version__ = "0.1.0"
