"""The wire format: the one cattrs converter, the envelope, and the API's error codes.

This is the only module that knows JSON field names. Envelope in, model or
:class:`~fay_async.exceptions.APIError` out.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from types import UnionType
from typing import Any, Final, TypeVar, Union, cast, get_args, get_origin

import cattrs
from cattrs.preconf.json import make_converter

from . import exceptions as exc
from ._models import (
    ConversationInfo,
    ConversationOutput,
    CreatedConversation,
    CreateRequest,
    ResearchStatus,
    StopResult,
)

__all__ = [
    "SNIPPET_LENGTH",
    "create_body",
    "decode_envelope",
    "error_from_envelope",
    "structure",
    "structure_event_info",
    "structure_event_output",
]

T = TypeVar("T")

#: How many characters of an unexpected body an error message quotes.
SNIPPET_LENGTH: Final = 200

#: Documented error codes, and the class each one maps to.
_ERROR_CODES: Final[Mapping[str | None, type[exc.APIError]]] = {
    "VALIDATION_ERROR": exc.RequestValidationError,
    "CONVERSATION_ALREADY_COMPLETED": exc.ConversationAlreadyCompletedError,
    "RESEARCH_NOT_COMPLETED": exc.ResearchNotCompletedError,
    "INVALID_API_KEY": exc.AuthenticationError,
    "REQUEST_NOT_FOUND": exc.NotFoundError,
    "RATE_LIMIT_EXCEEDED": exc.RateLimitError,
}

#: For codes this version does not know: the class by HTTP status.
_ERROR_STATUSES: Final[Mapping[int, type[exc.APIError]]] = {
    400: exc.BadRequestError,
    401: exc.AuthenticationError,
    403: exc.AuthenticationError,
    404: exc.NotFoundError,
    422: exc.BadRequestError,
    429: exc.RateLimitError,
}


# The hooks raise a bare TypeError: cattrs.transform_error words every one of them from the
# field's name and type ("invalid value for type, expected str @ Model.field").


def _structure_strict(value: object, kind: type[Any]) -> Any:
    # bool is an int in Python, and a JSON true must not pass for a number or the reverse.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError
    return value


_FROMISOFORMAT_TAKES_Z: Final = sys.version_info >= (3, 11)
_FRACTION: Final = re.compile(r"\.(\d+)(?=[+-]\d\d:?\d\d$|$)")


def _iso_text(value: str) -> str:
    """``value`` in the form Python 3.10's ``fromisoformat`` reads.

    It takes neither a ``Z`` for UTC nor a fraction of other than 3 or 6 digits: the ``Z``
    becomes ``+00:00`` and the fraction is padded or cut to 6 digits. (Later Pythons read
    both as they come, so there only the result of this function shows what it does.)
    """
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    # The fraction is anchored to the end (or to the offset there): it matches once at most.
    return _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text)


def _structure_datetime(value: object, _: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError
    if _FROMISOFORMAT_TAKES_Z:
        # Python 3.11 reads "Z" and a fraction of any length itself (cutting it to
        # microseconds as _iso_text does); what it refuses ("z") is normalised first.
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    return datetime.fromisoformat(_iso_text(value))


def _structure_status(value: object, _: object) -> ResearchStatus:
    if not isinstance(value, str) or not value:
        raise TypeError
    return ResearchStatus.from_api(value)


def _structure_object(value: object, _: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError
    return value


def _structure_output(value: object, _: object) -> str | dict[str, Any]:
    if isinstance(value, (str, dict)):
        return value
    raise TypeError


_OBJECT: Final[Any] = dict[str, Any]
_OUTPUT: Final[Any] = str | dict[str, Any]


# Built once, at import (and cattrs caches its dispatch on first use): a mutation test
# cannot switch a mutant of it on in time, so it is not mutated; the hooks it registers
# are functions of their own, mutated and tested as such.
def _make_converter() -> cattrs.Converter:  # pragma: no mutate block
    converter = make_converter()
    for kind in (str, bool, int):
        converter.register_structure_hook(kind, _structure_strict)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_structure_hook(ResearchStatus, _structure_status)
    converter.register_structure_hook_func(lambda t: t == _OBJECT, _structure_object)
    converter.register_structure_hook_func(lambda t: t == _OUTPUT, _structure_output)
    converter.register_structure_hook_factory(_is_optional, _optional_hook(converter))
    return converter


def _is_optional(kind: Any) -> bool:
    args = get_args(kind)
    return len(args) == 2 and type(None) in args and get_origin(kind) in (Union, UnionType)


def _optional_hook(converter: cattrs.Converter) -> Callable[[Any], Callable[[Any, Any], Any]]:
    """``X | None`` fields: the hook of X called directly (cattrs would dispatch per call)."""

    def factory(kind: Any) -> Callable[[Any, Any], Any]:
        (inner,) = (arg for arg in get_args(kind) if arg is not type(None))
        hook = converter.get_structure_hook(inner)

        def structure(value: object, _: object) -> Any:
            return None if value is None else hook(value, inner)

        return structure

    return factory


_converter: Final = _make_converter()


_hooks: Final[dict[type[Any], Callable[[Mapping[str, Any], type[Any]], Any]]] = {}


def _structure_hook(model: type[Any]) -> Callable[[Mapping[str, Any], type[Any]], Any]:
    """cattrs' structure function for a model, looked up once instead of on every call."""
    hook = _hooks.get(model)  # pragma: no mutate - a miss only makes the function again
    if hook is None:
        hook = _hooks[model] = _converter.get_structure_hook(model)
    return hook


def snippet(text: str | bytes) -> str:
    """A short, single-line excerpt of a body, for error messages."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")  # UTF-8, as JSON is
    flat = " ".join(text.split())
    if len(flat) > SNIPPET_LENGTH:
        return flat[:SNIPPET_LENGTH] + "..."
    return flat


def _unexpected(status_code: int, why: str, content: bytes) -> exc.UnexpectedResponseError:
    shown = snippet(content)
    detail = f"{why}; body: {shown!r}" if shown else f"{why}; the body is empty"
    return exc.UnexpectedResponseError(
        f"unexpected response from the Fay API: {detail}",
        status_code=status_code,
        body=shown,
    )


def decode_envelope(status_code: int, content: bytes) -> Mapping[str, Any]:
    """Return the ``data`` of a success envelope, or raise the error the body describes."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        raise _unexpected(status_code, "the body is not JSON", content) from None
    if not isinstance(body, dict) or not isinstance(body.get("status"), bool):
        raise _unexpected(status_code, "the body is not the Fay envelope", content)
    if body["status"] is False or "error" in body:
        raise error_from_envelope(status_code, body, content)
    data = body.get("data")
    if not isinstance(data, dict):
        raise _unexpected(status_code, "the envelope has no 'data' object", content)
    if not 200 <= status_code < 300:
        raise _unexpected(status_code, f"a success envelope came with HTTP {status_code}", content)
    return data


def error_from_envelope(status_code: int, body: Mapping[str, Any], content: bytes) -> exc.APIError:
    """The exception for an error envelope: by documented code, else by HTTP status."""
    error = body.get("error")
    if not isinstance(error, dict):
        return _unexpected(status_code, "an error envelope without an 'error' object", content)
    return _api_error(status_code, error, body)


def _api_error(status_code: int, error: Mapping[str, Any], body: Mapping[str, Any]) -> exc.APIError:
    code = error.get("code")
    message = error.get("message")
    code = code if isinstance(code, str) and code else None
    message = message if isinstance(message, str) and message else "no message given"
    version = body.get("version")
    cls = _ERROR_CODES.get(code) or _class_for_status(status_code)
    return cls(
        message,
        status_code=status_code,
        code=code,
        api_version=version if isinstance(version, str) else None,
        body=body,
    )


def error_from_response(status_code: int, content: bytes) -> exc.APIError:
    """The exception for a non-2xx response, whether or not its body is the envelope."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        pass
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and body.get("status") is False:
            return _api_error(status_code, error, body)
    if status_code >= 500:
        return exc.ServerError(
            f"the Fay API failed with HTTP {status_code}; body: {snippet(content)!r}",
            status_code=status_code,
            body=snippet(content),
        )
    return _unexpected(status_code, f"HTTP {status_code} without an error envelope", content)


def _class_for_status(status_code: int) -> type[exc.APIError]:
    if status_code >= 500:
        return exc.ServerError
    return _ERROR_STATUSES.get(status_code, exc.APIError)


def structure(status_code: int, data: Mapping[str, Any], model: type[T], content: bytes) -> T:
    """Turn an envelope's ``data`` into a model; a field of the wrong type is an API error."""
    try:
        return cast("T", _structure_hook(model)(data, model))
    except cattrs.BaseValidationError as error:
        # cattrs gathers whatever a field raised (the hooks' TypeError, a missing key, an
        # unknown status) into this one error, as the converter validates in detail.
        why = "; ".join(cattrs.transform_error(error, path=model.__name__))
        raise _unexpected(
            status_code,
            f"the {model.__name__} data does not match the documented fields: {why}",
            content,
        ) from error


def _why(error: Exception, path: str) -> str:
    if isinstance(error, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(error, path=path))
    return str(error)


def structure_event_info(data: Mapping[str, Any]) -> ConversationInfo:
    """The research state a webhook event's ``data`` carries (Status, Output, Error events).

    They hold Check Status fields (``request_id``, ``status``, ``conversation_id``, the
    timestamps, ``error_message``); the ones an event leaves out stay at their defaults.
    Raises ``ValueError`` saying which field is missing or of the wrong type.
    """
    try:
        return _converter.structure(data, ConversationInfo)
    except (cattrs.BaseValidationError, ValueError, TypeError, KeyError) as error:
        raise ValueError(_why(error, "data")) from error


def structure_event_output(data: Mapping[str, Any]) -> str | dict[str, Any]:
    """An Output event's ``output``: Markdown text, or a JSON object for structured output."""
    if "output" not in data:
        raise ValueError("required field missing @ data.output")
    output = data["output"]
    if not isinstance(output, (str, dict)):
        raise ValueError(  # noqa: TRY004 - the caller reads a ValueError as a bad payload
            f"expected a string or a JSON object, got {type(output).__name__} @ data.output"
        )
    return output


def create_body(request: CreateRequest) -> dict[str, Any]:
    """The JSON body of Create Conversation."""
    body: dict[str, Any] = {
        "prompt": request.prompt,
        "structured_output": request.structured_output,
    }
    if request.output_schema is not None:
        body["output_schema"] = request.output_schema
    return body


MODELS: Final = (CreatedConversation, ConversationInfo, ConversationOutput, StopResult)
