"""Reading documents: bytes → text → JSON/TOML mapping → model, every failure a SpecError."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import SpecError, describe, quote

M = TypeVar("M", bound=BaseModel)

Source = str | bytes | Mapping[str, Any]


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a file, turning any OS error into a SpecError naming the file."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as fh:
            return fh.read()
    except IsADirectoryError:
        raise SpecError.single("is a directory, not a file", source=name) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SpecError.single(f"cannot read file: {reason}", source=name) from None


def decode_text(data: str | bytes, *, source: str | None = None) -> str:
    """UTF-8 text of a document (a leading byte-order mark is ignored)."""
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError.single(
            f"not UTF-8 text (invalid byte 0x{data[exc.start]:02x} at offset {exc.start})",
            source=source,
        ) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON documents")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {quote(key)}")
        out[key] = value
    return out


def parse_json_text(data: str | bytes, *, source: str | None = None) -> Any:
    """Parse JSON; errors name the line and column."""
    text = decode_text(data, source=source)
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise SpecError.single(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", source=source
        ) from None
    except RecursionError:
        raise SpecError.single("invalid JSON: nested too deeply", source=source) from None
    except ValueError as exc:
        raise SpecError.single(f"invalid JSON: {exc}", source=source) from None


def parse_toml_text(data: str | bytes, *, source: str | None = None) -> dict[str, Any]:
    """Parse TOML; errors name the line and column."""
    text = decode_text(data, source=source)
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise SpecError.single("invalid TOML: nested too deeply", source=source) from None
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise SpecError.single(f"invalid TOML: {exc}", source=source) from None


def as_mapping(
    data: Any, *, source: str | None = None, what: str = "JSON object"
) -> dict[str, Any]:
    """Require the top level of a document to be an object."""
    if not isinstance(data, Mapping):
        raise SpecError.single(
            f"the document must be a {what} (got {describe(data)})", source=source
        )
    return dict(data)


def json_document(data: Source, *, source: str | None = None) -> dict[str, Any]:
    """A JSON document given as text, bytes, or an already-decoded mapping."""
    if isinstance(data, (str, bytes)):
        data = parse_json_text(data, source=source)
    return as_mapping(data, source=source)


def validate_model(
    model: type[M],
    data: Any,
    *,
    source: str | None = None,
    context: dict[str, Any] | None = None,
    table_word: str = "object",
) -> M:
    """Validate ``data`` as ``model``; every failure becomes one SpecError with all issues."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise SpecError.from_validation_error(
            exc, model, source=source, table_word=table_word
        ) from None
    except RecursionError:
        raise SpecError.single("the document is nested too deeply", source=source) from None
