"""Validation building blocks shared by every document model (private)."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, NoReturn, cast
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from .errors import Loc, describe, quote

# --- raising issues from validators --------------------------------------------------------


def fail(message: str) -> NoReturn:
    """Reject the value being validated with ``message``."""
    raise PydanticCustomError("spec", "{message}", {"message": message})


def fail_many(issues: Sequence[tuple[Loc, str]], *, from_parent: bool = False) -> NoReturn:
    """Reject with several issues, each at a path relative to the value being validated.

    With ``from_parent`` the paths are relative to the model that owns the field (for field
    validators that check rules spanning several fields of that model).
    """
    raise PydanticCustomError(
        "spec",
        "{message}",
        {"message": issues[0][1], "issues": tuple(issues), "from_parent": from_parent},
    )


def fail_at(loc: Loc | str, message: str) -> NoReturn:
    """Reject with one issue at ``loc``, relative to the value being validated."""
    fail_many([((loc,) if isinstance(loc, str) else loc, message)])


class Problems:
    """Collects issues during one validator and raises them together."""

    def __init__(self) -> None:
        self.items: list[tuple[Loc, str]] = []

    def add(self, loc: Loc | str, message: str) -> None:
        self.items.append(((loc,) if isinstance(loc, str) else loc, message))

    def raise_if_any(self, *, from_parent: bool = False) -> None:
        if self.items:
            fail_many(self.items, from_parent=from_parent)


# --- base model ----------------------------------------------------------------------------


class SpecModel(BaseModel):
    """Base of every document model: strict types, unknown keys rejected.

    Upstream writes absent values as ``null`` or ``""`` (Go zero values); for fields that are
    optional such a blank value means "not given" and the default applies. Fields listed in
    ``__blank_objects__`` also treat an object made only of blank/zero values as not given
    (upstream serialises e.g. ``"rootfs": {"url": ""}`` for a plugin without a rootfs).
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        serialize_by_alias=True,
        json_schema_serialization_defaults_required=True,
    )

    __blank_objects__: ClassVar[frozenset[str]] = frozenset()
    __key_hints__: ClassVar[dict[str, str]] = {}
    __keep_nulls__: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _drop_blank_values(cls, data: Any) -> Any:
        if not isinstance(data, dict) or cls.__keep_nulls__:
            return data
        optional = _optional_keys(cls)
        out: dict[Any, Any] = {}
        for key, value in data.items():
            accepts_str = optional.get(key) if isinstance(key, str) else None
            if accepts_str is not None:
                if value is None:
                    continue
                if accepts_str and isinstance(value, str) and not value.strip():
                    continue
                if key in cls.__blank_objects__ and isinstance(value, dict) and _all_blank(value):
                    continue
            out[key] = value
        return out


@cache
def _optional_keys(cls: type[BaseModel]) -> dict[str, bool]:
    """Input keys of optional fields, each mapped to whether the field takes a string."""
    out: dict[str, bool] = {}
    for name, field in cls.model_fields.items():
        if not field.is_required():
            out[field.alias or name] = _accepts_str(field.annotation)
    return out


def _accepts_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _accepts_str(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_str(a) for a in args)
    if origin is Literal:
        return any(isinstance(a, str) for a in args)
    return False


def _all_blank(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_all_blank(v) for v in value.values())
    if isinstance(value, str):
        return not value.strip()
    return value is None or value is False or value == 0 or value == []


# --- enumerations --------------------------------------------------------------------------


def choice(literal: Any, *, aliases: Mapping[str, str] | None = None) -> BeforeValidator:
    """Validator for a string enumeration: trims, lower-cases, maps aliases, names the choices.

    ``literal`` is the ``Literal[...]`` type; aliases (e.g. upstream names) are accepted on input
    and appear in the JSON Schema's enum, but the model always holds the canonical value.
    """
    values: tuple[str, ...] = typing.get_args(literal)
    canonical = {v.lower(): v for v in values}
    canonical.update({k.lower(): v for k, v in (aliases or {}).items()})
    accepted = values + tuple(a for a in (aliases or {}) if a not in values)

    def check(value: Any) -> Any:
        if not isinstance(value, str):
            fail(f"must be a string, one of: {', '.join(values)} (got {describe(value)})")
        found = canonical.get(value.strip().lower())
        if found is None:
            fail(f"invalid value {quote(value)}, must be one of: {', '.join(values)}")
        return found

    return BeforeValidator(check, json_schema_input_type=cast(Any, Literal)[accepted])


# --- strings -------------------------------------------------------------------------------


def _no_control(value: str) -> str:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        fail("must not contain control characters (newline, tab, NUL, ...)")
    return value


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _required_text(value: str) -> str:
    if not value:
        fail("must not be empty")
    return value


Text = Annotated[str, BeforeValidator(_strip), AfterValidator(_no_control)]
"""A trimmed single-line string."""

RequiredText = Annotated[Text, AfterValidator(_required_text)]
"""A trimmed, non-empty single-line string."""

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def suggest_label(value: str) -> str:
    """The nearest DNS label to ``value`` (lower-cased, invalid characters turned into '-')."""
    text = re.sub(r"[^a-z0-9-]+", "-", value.lower())
    text = re.sub(r"-{2,}", "-", text).strip("-")[:63]
    return text.rstrip("-")


def _dns_label(value: str) -> str:
    if _LABEL.fullmatch(value):
        return value
    hint = suggest_label(value)
    tail = f"; try {quote(hint)}" if hint and hint != value else ""
    fail(
        "must be a DNS label: 1-63 characters from a-z, 0-9 and '-', starting and ending with "
        f"a letter or digit (got {quote(value)}{tail})"
    )


Name = Annotated[str, BeforeValidator(_strip), AfterValidator(_dns_label)]
"""A lower-case DNS label (plugin names, runtimes, kernel names)."""

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _key(value: str) -> str:
    if not _KEY.fullmatch(value):
        fail(
            "must be 1-63 characters from A-Z, a-z, 0-9, '.', '_' and '-', starting with a "
            f"letter or digit (got {quote(value)})"
        )
    return value


Key = Annotated[str, BeforeValidator(_strip), AfterValidator(_key)]
"""An identifier used in URLs and file names (action, disk and expose names)."""


def _guest_path(value: str) -> str:
    _no_control(value)
    if not value.startswith("/"):
        fail(f"must be an absolute path inside the guest (start with /), got {quote(value)}")
    if ".." in value.split("/"):
        fail(f"must not contain '..' path components (got {quote(value)})")
    return value


GuestPath = Annotated[str, BeforeValidator(_strip), AfterValidator(_guest_path)]
"""An absolute path inside the guest, without ``..`` components."""


def _host_path(value: str) -> str:
    if not value:
        fail("must not be empty")
    if "\x00" in value:
        fail("must not contain NUL characters")
    return value


HostPath = Annotated[str, BeforeValidator(_strip), AfterValidator(_host_path)]
"""A path on the build or VM host (absolute, or relative to the document's directory)."""


# --- checksums -----------------------------------------------------------------------------

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_ALGO = re.compile(r"([A-Za-z][A-Za-z0-9_+-]*):(.*)", re.DOTALL)


def normalise_checksum(value: str) -> str:
    """``sha256:<hex>`` or bare hex → ``sha256:<lower-case hex>``; anything else is rejected."""
    text = value.strip()
    match = _ALGO.fullmatch(text)
    if match:
        algo, digest = match.group(1).lower(), match.group(2).strip()
        if algo != "sha256":
            fail(
                f"unsupported checksum algorithm {quote(match.group(1))}: only sha256 is "
                "supported (write 'sha256:<64 hex digits>')"
            )
    else:
        digest = text
    if not _HEX64.fullmatch(digest):
        fail(f"must be 'sha256:' followed by 64 hex digits, or 64 hex digits (got {quote(value)})")
    return "sha256:" + digest.lower()


def _checksum(value: str) -> str:
    return normalise_checksum(value)


Checksum = Annotated[str, AfterValidator(_checksum)]
"""A SHA-256 digest, normalised to ``sha256:<64 lower-case hex digits>``."""


# --- URLs ----------------------------------------------------------------------------------

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def normalise_artifact_url(value: str) -> str:
    """Check an artifact location and return its canonical spelling.

    Accepted: ``http(s)://host/...``, ``file:///abs/path`` (``file://localhost/...`` too), an
    absolute path, or a relative path (resolved later against the manifest's directory). A
    ``file://`` URL without a leading ``/`` (upstream fledge wrote ``file://plugin.cpio.gz``)
    is read as the relative path it meant.
    """
    text = value.strip()
    if not text:
        fail("must not be empty")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        fail(f"must not contain spaces or control characters (got {quote(value)})")
    match = _SCHEME.match(text)
    if match is None:
        return text
    scheme = match.group(1).lower()
    rest = text[match.end() :]
    if scheme in ("http", "https"):
        check_http_url(text)
        return text
    if scheme == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if rest.startswith("/"):
            return "file://" + rest
        if not rest:
            fail("file:// URL has no path")
        return rest
    fail(
        f"unsupported URL scheme {quote(match.group(1))}: use http://, https://, file:// or a "
        "file path"
    )


def check_http_url(text: str) -> str:
    """Require an http(s) URL with a host."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        fail(f"is not a valid URL ({exc})")
    if parts.scheme.lower() not in ("http", "https"):
        fail(f"must be an http:// or https:// URL (got {quote(text)})")
    if not parts.hostname:
        fail(f"URL has no host (got {quote(text)})")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in text):
        fail(f"must not contain spaces or control characters (got {quote(text)})")
    return text


def _artifact_url(value: str) -> str:
    return normalise_artifact_url(value)


ArtifactURL = Annotated[str, AfterValidator(_artifact_url)]
"""Where an artifact lives: http(s) URL, file:// URL, absolute or relative path."""

HttpURL = Annotated[str, BeforeValidator(_strip), AfterValidator(check_http_url)]
"""An http:// or https:// URL with a host."""


# --- misc ----------------------------------------------------------------------------------


def is_url(text: str) -> bool:
    """Whether ``text`` carries a URL scheme (``http://``, ``file://`` ...)."""
    return _SCHEME.match(text) is not None
