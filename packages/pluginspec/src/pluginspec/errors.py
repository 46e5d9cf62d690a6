"""The one error type of pluginspec: a document is invalid, here is every reason why."""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def format_path(loc: Sequence[str | int]) -> str:
    """Render a location as a field path: ``network.expose[1].port``, ``mappings."./app"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        key = part if _PLAIN_KEY.fullmatch(part) else json.dumps(part)
        out += f".{key}" if out else key
    return out


@dataclass(frozen=True)
class Issue:
    """One problem in a document: where (``path``, empty for the whole document) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ValueError):
    """A document is not valid; ``issues`` lists every problem found, each with its field path."""

    def __init__(self, issues: Iterable[Issue], *, source: str | None = None) -> None:
        self.issues: tuple[Issue, ...] = tuple(issues) or (Issue("", "invalid document"),)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return "\n".join(prefix + str(issue) for issue in self.issues)

    def with_source(self, source: str) -> SpecError:
        """The same issues, attributed to ``source`` (usually a file name)."""
        return SpecError(self.issues, source=source)

    @classmethod
    def single(cls, message: str, path: str = "", *, source: str | None = None) -> SpecError:
        """An error with one issue."""
        return cls([Issue(path, message)], source=source)

    @classmethod
    def from_validation_error(
        cls,
        exc: ValidationError,
        model: type[BaseModel] | None = None,
        *,
        source: str | None = None,
        table_word: str = "object",
    ) -> SpecError:
        """Translate pydantic's errors into field paths and plain-language messages.

        ``model`` (the model that was validated) lets unknown-key errors suggest the
        nearest allowed key; ``table_word`` is "table" for TOML documents.
        """
        issues: list[Issue] = []
        seen: set[Issue] = set()
        for err in exc.errors(include_url=False):
            for issue in _translate(err, model, table_word):
                if issue not in seen:
                    seen.add(issue)
                    issues.append(issue)
        return cls(issues, source=source)


# --- translation of pydantic errors -------------------------------------------------------


def _translate(err: Any, model: type[BaseModel] | None, table_word: str) -> list[Issue]:
    loc: Loc = tuple(err.get("loc", ()))
    kind: str = err.get("type", "")
    ctx: dict[str, Any] = err.get("ctx") or {}
    key_prefix = ""
    if loc and loc[-1] == "[key]":  # pydantic's marker for a bad mapping key
        loc, key_prefix = loc[:-1], "key "
    if kind == "spec":
        sub = ctx.get("issues")
        if sub:
            base = loc[:-1] if ctx.get("from_parent") else loc
            return [Issue(format_path(base + tuple(rel)), str(msg)) for rel, msg in sub]
        message = str(ctx.get("message", err.get("msg", "")))
    else:
        message = _message(kind, ctx, err.get("input"), err, loc, model, table_word)
    return [Issue(format_path(loc), key_prefix + message)]


def _message(
    kind: str,
    ctx: dict[str, Any],
    value: Any,
    err: Any,
    loc: Loc,
    model: type[BaseModel] | None,
    table_word: str,
) -> str:
    got = describe(value)
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return _unknown_key(loc, model)
    if kind == "string_type":
        return f"must be a string (got {got})"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer (got {got})"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number (got {got})"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false (got {got})"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"must be a list (got {got})"
    if kind in ("dict_type", "model_type", "model_attributes_type", "dataclass_type"):
        article = "an" if table_word[0] in "aeiou" else "a"
        return f"must be {article} {table_word} (got {got})"
    if kind == "literal_error":
        expected = re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", "")))
        return f"invalid value {got}, must be one of: {', '.join(expected)}"
    if kind == "greater_than_equal":
        return f"must be >= {ctx.get('ge')} (got {got})"
    if kind == "greater_than":
        return f"must be > {ctx.get('gt')} (got {got})"
    if kind == "less_than_equal":
        return f"must be <= {ctx.get('le')} (got {got})"
    if kind == "less_than":
        return f"must be < {ctx.get('lt')} (got {got})"
    if kind == "finite_number":
        return f"must be a finite number (got {got})"
    if kind == "string_too_short":
        n = ctx.get("min_length", 1)
        return "must not be empty" if n == 1 else f"must be at least {n} characters long"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} item(s)"
    if kind == "value_error":
        return str(err.get("msg", "")).removeprefix("Value error, ")
    return str(err.get("msg", "invalid value"))


def describe(value: Any) -> str:
    """Describe an input value for a message: ``integer 5``, ``string 'x'``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() < 200 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def quote(text: str, limit: int = 60) -> str:
    """Quote user text for a message, shortened, with unprintable characters escaped."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    shown = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )
    return f"'{shown}'"


def _unknown_key(loc: Loc, model: type[BaseModel] | None) -> str:
    key = loc[-1] if loc else ""
    message = f"unknown key {quote(str(key))}"
    owner = _model_at(model, loc[:-1]) if model is not None else None
    if owner is None:
        return message
    hints: dict[str, str] = getattr(owner, "__key_hints__", {})
    if isinstance(key, str) and key in hints:
        return f"{message}: {hints[key]}"
    allowed = [f.alias or name for name, f in owner.model_fields.items()]
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean {quote(close[0])}?)"
    return f"{message} (allowed: {', '.join(allowed)})"


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """Follow ``loc`` through nested model, list and dict annotations to the owning model."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not isinstance(part, str):
                return None
            field = _field_by_key(current, part)
            if field is None:
                return None
            current = field
            continue
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        if origin in (list, tuple) and args and isinstance(part, int):
            current = args[0]
        elif origin is dict and len(args) == 2 and isinstance(part, str):
            current = args[1]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _field_by_key(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        if key in (name, field.alias):
            return field.annotation
    return None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation
