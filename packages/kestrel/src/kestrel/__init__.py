"""kestrel: the Volant guest agent (PID 1 inside every microVM)."""

__version__ = "0.1.0"
