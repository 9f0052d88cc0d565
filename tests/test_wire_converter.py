"""The converter's own parts: which fields count as optional, and their direct hook.

Models are decoded through cached structure functions, so these parts run once per
model and process; here each is checked on its own, on a converter made for the test.
"""

from __future__ import annotations

from typing import Optional, Union

import pytest

from fay_async import ConversationInfo, ResearchStatus
from fay_async import _wire as wire


@pytest.mark.parametrize(
    ("kind", "optional"),
    [
        (str | None, True),
        (None | int, True),
        (Optional[int], True),  # noqa: UP045 - the older spelling is what is checked
        (Union[int, None], True),  # noqa: UP007 - the older spelling is what is checked
        (int | str, False),
        (int | str | None, False),
        (list[int], False),
        (dict[str, int | None], False),
        (int, False),
    ],
)
def test_which_fields_are_optional(kind: object, optional: bool) -> None:
    assert wire._is_optional(kind) is optional


def test_an_optional_field_s_hook_is_its_type_s_hook_or_none() -> None:
    converter = wire._make_converter()
    structure = wire._optional_hook(converter)(int | None)
    assert structure(None, int | None) is None
    assert structure(7, int | None) == 7
    with pytest.raises(TypeError):
        structure(True, int | None)  # the strict int hook: a bool is no number
    with pytest.raises(TypeError):
        structure("7", int | None)


def test_a_fresh_converter_decodes_optional_fields_set_and_absent() -> None:
    converter = wire._make_converter()
    full = converter.structure(
        {
            "request_id": "r-1",
            "status": "FAILED",
            "conversation_id": "c-1",
            "error_message": "no sources",
        },
        ConversationInfo,
    )
    assert (full.conversation_id, full.error_message) == ("c-1", "no sources")
    assert full.status is ResearchStatus.FAILED
    bare = converter.structure({"request_id": "r-2", "status": "PENDING"}, ConversationInfo)
    assert (bare.conversation_id, bare.error_message) == (None, None)


def test_each_model_s_structure_function_is_made_once() -> None:
    wire._hooks.pop(ConversationInfo, None)
    data = {"request_id": "r-1", "status": "PENDING"}
    first = wire.structure(200, data, ConversationInfo, b"{}")
    made = wire._hooks[ConversationInfo]
    again = wire.structure(200, data, ConversationInfo, b"{}")
    assert wire._hooks[ConversationInfo] is made
    assert first == again == ConversationInfo(request_id="r-1", status=ResearchStatus.PENDING)
