"""Example JSON values for a JSON schema: the emulator's structured outputs.

A small generator, not a validator: it understands ``type`` (also a list of types),
``object``/``properties``/``required``, ``array``/``items``/``minItems``/``maxItems``,
``string`` (with ``format``, ``minLength``, ``maxLength``), ``number``/``integer`` (with
``minimum``, ``maximum``, ``exclusiveMinimum``), ``boolean``, ``null``, ``enum``,
``const`` and the first branch of ``anyOf``/``oneOf``/``allOf``. Anything else yields a
string.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypeGuard

__all__ = ["default_structured_output", "example_for_schema"]

_MAX_DEPTH: Final = 8
_MAX_ITEMS: Final = 5
_SNIPPET: Final = 80

_FORMATS: Final[Mapping[str, str]] = {
    "date-time": "2025-01-01T00:00:00+00:00",
    "date": "2025-01-01",
    "time": "00:00:00+00:00",
    "email": "research@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def example_for_schema(schema: Mapping[str, Any], *, prompt: str) -> Any:
    """A JSON value that fits ``schema``; its strings mention ``prompt``."""
    return _example(schema, prompt, "value", 0)


def default_structured_output(prompt: str) -> dict[str, Any]:
    """The structured output of a research that asked for JSON without a schema."""
    return {
        "title": "Emulated research",
        "prompt": prompt,
        "summary": f"Placeholder findings for: {_snippet(prompt)}",
        "findings": ["First emulated finding", "Second emulated finding"],
        "sources": ["https://example.com/source-1", "https://example.com/source-2"],
    }


def _snippet(prompt: str) -> str:
    flat = " ".join(prompt.split())
    return flat if len(flat) <= _SNIPPET else flat[:_SNIPPET] + "..."


def _first_type(kind: object, schema: Mapping[str, Any]) -> object:
    if isinstance(kind, list):
        concrete = [k for k in kind if k != "null"]
        return concrete[0] if concrete else "null"
    if kind is None:
        if "properties" in schema or "required" in schema:
            return "object"
        if "items" in schema:
            return "array"
        return "string"
    return kind


def _example(schema: object, prompt: str, name: str, depth: int) -> Any:  # noqa: PLR0911
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return _string({}, prompt, name)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(combinator)
        if isinstance(branches, list) and branches:
            return _example(branches[0], prompt, name, depth + 1)
    kind = _first_type(schema.get("type"), schema)
    if kind == "object":
        return _object(schema, prompt, depth)
    if kind == "array":
        return _array(schema, prompt, name, depth)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, prompt, name)


def _object(schema: Mapping[str, Any], prompt: str, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    result = {
        str(key): _example(sub, prompt, str(key), depth + 1) for key, sub in properties.items()
    }
    required = schema.get("required")
    for key in required if isinstance(required, list) else ():
        if isinstance(key, str) and key not in result:
            result[key] = _string({}, prompt, key)
    return result


def _array(schema: Mapping[str, Any], prompt: str, name: str, depth: int) -> list[Any]:
    items = schema.get("items")
    low = schema.get("minItems")
    high = schema.get("maxItems")
    count = low if _is_int(low) and low > 0 else 2
    if _is_int(high):
        count = min(count, high)
    count = max(0, min(count, _MAX_ITEMS))
    if isinstance(items, list):  # tuple form: one schema per position
        return [_example(sub, prompt, f"{name}_{i + 1}", depth + 1) for i, sub in enumerate(items)]
    return [_example(items, prompt, f"{name}_{i + 1}", depth + 1) for i in range(count)]


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    value: float = 1 if integer else 1.5
    minimum = schema.get("minimum")
    exclusive = schema.get("exclusiveMinimum")
    maximum = schema.get("maximum")
    if _is_num(minimum):
        value = max(value, minimum)
    if _is_num(exclusive) and value <= exclusive:
        value = exclusive + 1
    if _is_num(maximum):
        value = min(value, maximum)
    return int(value) if integer else float(value)


def _string(schema: Mapping[str, Any], prompt: str, name: str) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    text = f"Emulated {name} for: {_snippet(prompt)}"
    low = schema.get("minLength")
    high = schema.get("maxLength")
    if _is_int(low) and len(text) < low:
        text = text.ljust(low, ".")
    if _is_int(high):
        text = text[: max(0, high)]
    return text


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
