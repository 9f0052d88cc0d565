"""What makes the library's values JSON-friendly: ``to_dict()``, ``dict(value)`` and pydantic.

The public values are attrs classes whose field names are the API's own, so their JSON
is their fields, with timestamps as ISO 8601 strings and statuses as their strings.
Web frameworks get there without help: FastAPI encodes an object it does not know with
``dict(obj)`` (so iterating a value gives its ``(name, JSON value)`` pairs), and builds
a response model from a return annotation through pydantic's
``__get_pydantic_core_schema__`` hook, which pydantic looks up on the class. Nothing
here imports pydantic unless pydantic asks.
"""

from __future__ import annotations

import enum
import functools
import types
import typing
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, Union

import attrs

__all__ = ["JSONValue", "to_json"]


def to_json(value: Any) -> Any:
    """``value`` with every datetime, enum, value and container made plain JSON types."""
    if isinstance(value, JSONValue):
        return value.to_dict()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(item) for item in value]
    return value


class JSONValue:
    """A base of the attrs value classes: their JSON, under the API's own field names."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The value as JSON types (``datetime`` as ISO 8601, statuses as strings)."""
        return {
            field.name: to_json(getattr(self, field.name))
            for field in attrs.fields(type(self))  # type: ignore[arg-type]
        }

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        """``(name, JSON value)`` pairs: ``dict(value) == value.to_dict()``."""
        return iter(self.to_dict().items())

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> Any:
        """pydantic (FastAPI's response models): accept an instance, serialise to_dict()."""
        from pydantic_core import core_schema  # noqa: PLC0415 - only when pydantic asks

        def validate(value: Any) -> Any:
            if not isinstance(value, cls):
                # pydantic reports a ValueError as a validation error (a TypeError escapes).
                raise ValueError(  # noqa: TRY004
                    f"expected a {cls.__name__}, got {type(value).__name__}"
                )
            return value

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.to_dict()
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, _schema: Any, _handler: Any) -> dict[str, Any]:
        """The JSON schema of the value (for an OpenAPI document)."""
        return json_schema(cls)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def json_schema(cls: type) -> dict[str, Any]:
    """A JSON schema of an attrs value class, from its field types."""
    hints = _hints(cls)
    fields = attrs.fields(cls)
    return {
        "title": cls.__name__,
        "type": "object",
        "properties": {field.name: _schema_of(hints[field.name]) for field in fields},
        "required": [field.name for field in fields if field.default is attrs.NOTHING],
    }


def _schema_of(kind: Any) -> dict[str, Any]:  # noqa: PLR0911 - one answer per kind
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema_of(arg) for arg in typing.get_args(kind)]}
    if kind is type(None):
        return {"type": "null"}
    if kind is datetime:
        return {"type": "string", "format": "date-time"}
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return {"type": "string"}
    if isinstance(kind, type) and issubclass(kind, JSONValue):
        return json_schema(kind)
    simple = {str: "string", bool: "boolean", int: "integer", float: "number"}
    if kind in simple:
        return {"type": simple[kind]}
    return {"type": "object"}
