"""volantd's REST API (FastAPI): ``create_app`` builds it around a set of services."""

from volantd.api.app import create_app

__all__ = ["create_app"]
