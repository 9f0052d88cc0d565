"""Batch input files and the journal that makes a batch resumable."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from fay_async._journal import BatchInputError, BatchItem, Journal, read_items


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


def test_item_of() -> None:
    assert BatchItem.of("hello", 3) == BatchItem(key="#3", prompt="hello")
    item = BatchItem(key="k", prompt="p")
    assert BatchItem.of(item, 0) is item


def test_journal_records_ids_and_results_across_reopen(tmp_path: Path) -> None:
    items = [BatchItem(key="a", prompt="A"), BatchItem(key="b", prompt="B")]
    path = tmp_path / "out.jsonl.journal.sqlite"
    with Journal(path) as journal:
        journal.register(items, input_path="in.txt")
        journal.created("a", "req-a")
        journal.finished("a", {"id": "a", "status": "COMPLETED"})
        journal.created("b", "req-b")
    with Journal(path) as journal:
        journal.register(items, input_path="in.txt")
        entries = journal.entries()
        assert list(entries) == ["a", "b"]
        assert entries["a"].finished
        assert entries["a"].request_id == "req-a"
        assert not entries["b"].finished
        assert entries["b"].request_id == "req-b"
        assert list(journal.results()) == [{"id": "a", "status": "COMPLETED"}]


def test_journal_refuses_an_edited_input(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.register([BatchItem(key="line-1", prompt="old", line=1)], input_path="in.txt")
    with (
        Journal(path) as journal,
        pytest.raises(BatchInputError, match=r"in\.txt:1: item 'line-1' changed"),
    ):
        journal.register([BatchItem(key="line-1", prompt="new", line=1)], input_path="in.txt")


def test_journal_that_is_not_a_database(tmp_path: Path) -> None:
    path = write(tmp_path, "j.sqlite", b"this is not sqlite" * 100)
    with pytest.raises(BatchInputError, match="the batch journal cannot be used"):
        Journal(path)


def test_journal_of_another_format(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE name = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(BatchInputError, match="has format 99"):
        Journal(path)


def test_fingerprint_follows_what_is_sent() -> None:
    a = BatchItem(key="k", prompt="p")
    assert a.fingerprint == BatchItem(key="other", prompt="p", line=9).fingerprint
    assert a.fingerprint != BatchItem(key="k", prompt="p", structured_output=True).fingerprint


def test_journal_tells_a_create_cut_off_from_one_that_answered(tmp_path: Path) -> None:
    items = [BatchItem(key="a", prompt="A"), BatchItem(key="b", prompt="B")]
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.register(items, input_path="in")
        journal.creating("a")
        journal.creating("b")
        journal.created("b", "req-b")
        entries = journal.entries()
        assert entries["a"].uncertain
        assert not entries["b"].uncertain
        journal.restart("a")
        assert not journal.entries()["a"].uncertain


def test_one_process_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path), pytest.raises(BatchInputError, match="another fay-async batch is running"):
        Journal(path)
    with Journal(path) as journal:  # released on close
        assert journal.is_empty


def test_a_journal_is_bound_to_where_its_researches_live(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as journal:
        journal.bind_target("https://api.fay.work")
        journal.bind_target("https://api.fay.work")
    with (
        Journal(path) as journal,
        pytest.raises(
            BatchInputError, match=r"started against https://api\.fay\.work and is now run against"
        ),
    ):
        journal.bind_target("http://127.0.0.1:8765")


def test_results_of_items_no_longer_in_the_input_are_left_out(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        items = [BatchItem(key="a", prompt="A"), BatchItem(key="b", prompt="B")]
        journal.register(items, input_path="in")
        journal.finished("a", {"id": "a"})
        journal.finished("b", {"id": "b"})
        assert list(journal.results(["b"])) == [{"id": "b"}]
        assert len(list(journal.results())) == 2


def test_registering_is_all_or_nothing(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.register([BatchItem(key="a", prompt="A")], input_path="in")
        with pytest.raises(BatchInputError):
            journal.register(
                [BatchItem(key="new", prompt="N"), BatchItem(key="a", prompt="changed")],
                input_path="in",
            )
        assert list(journal.entries()) == ["a"]
