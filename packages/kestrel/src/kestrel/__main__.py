"""``python -m kestrel``."""

from kestrel.main import run

run()
