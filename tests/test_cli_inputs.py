"""Reading batch input files: plain text or JSONL, every problem named by file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fay_async import BatchItem
from fay_async._cli.inputs import BatchInputError, read_items


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_plain_text_one_prompt_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "prompts.txt", "First question\n\n  Second question  \n{not json}\n")
    items = read_items(path)
    assert [(i.key, i.prompt, i.line) for i in items] == [
        ("line-1", "First question", 1),
        ("line-3", "Second question", 3),
        ("line-4", "{not json}", 4),
    ]
    assert not any(i.structured_output for i in items)


def test_jsonl_with_every_field(tmp_path: Path) -> None:
    lines = [
        {"prompt": "plain"},
        {"prompt": "structured", "structured_output": True, "id": "s1"},
        {"prompt": "schema", "output_schema": {"type": "object"}, "id": 7},
    ]
    path = write(tmp_path, "in.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    items = read_items(path)
    assert items == [
        BatchItem(key="line-1", prompt="plain", line=1),
        BatchItem(key="s1", prompt="structured", structured_output=True, line=2),
        BatchItem(
            key="7",
            prompt="schema",
            structured_output=True,
            output_schema={"type": "object"},
            line=3,
        ),
    ]


def test_jsonl_is_recognised_without_the_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "batch.in", '{"prompt": "x"}\n')
    assert read_items(path)[0].prompt == "x"


def test_a_bom_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "p.txt", "\ufeffFirst\n".encode())
    assert read_items(path)[0].prompt == "First"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("in.jsonl", '{"prompt": "ok"}\n{"prompt": \n', ":2: not valid JSON"),
        ("in.jsonl", '["prompt"]\n', ":1: each line must be a JSON object"),
        ("in.jsonl", '{"prompt": ""}\n', ":1: 'prompt' must be a non-empty string"),
        ("in.jsonl", '{"text": "x"}\n', ":1: unknown field\\(s\\) text"),
        ("in.jsonl", '{"prompt": "x", "structured_output": "yes"}\n', "must be true or false"),
        ("in.jsonl", '{"prompt": "x", "output_schema": []}\n', "must be a JSON object"),
        (
            "in.jsonl",
            '{"prompt": "x", "structured_output": false, "output_schema": {}}\n',
            "needs 'structured_output': true",
        ),
        ("in.jsonl", '{"prompt": "x", "id": true}\n', "'id' must be"),
        ("in.jsonl", '{"prompt": "x", "id": " "}\n', "'id' must be"),
        (
            "in.jsonl",
            '{"prompt": "a", "id": 1}\n\n{"prompt": "b", "id": "1"}\n',
            ":3: id '1' was already used on line 1",
        ),
        ("p.txt", "", "no prompts in the file"),
        ("p.txt", "\n \n", "no prompts in the file"),
        ("p.txt", "ok\nbad\x00line\n", ":2: contains a NUL byte"),
        ("p.txt", "x" * 100_001, ":1: the prompt is 100001 characters"),
    ],
)
def test_bad_input_names_file_and_line(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(BatchInputError, match=message) as info:
        read_items(path)
    assert str(info.value).startswith(str(path))


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p.txt", b"fine\nalso fine\n\xff\xfe broken\n")
    with pytest.raises(BatchInputError, match=r"p.txt:3: not UTF-8 text"):
        read_items(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(BatchInputError, match="no such file"):
        read_items(tmp_path / "nope.txt")
    with pytest.raises(BatchInputError, match="is a directory"):
        read_items(tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "p.txt", "x\n")

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(BatchInputError, match="cannot read it \\(Permission denied\\)"):
        read_items(path)
