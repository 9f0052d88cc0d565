"""The batch journal: request ids and results that survive a crash, one run at a time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fay_async import BatchItem
from fay_async._cli.inputs import BatchInputError
from fay_async._cli.journal import Journal, journal_path


def test_journal_path_is_beside_the_output(tmp_path: Path) -> None:
    assert journal_path(tmp_path / "o.jsonl") == tmp_path / "o.jsonl.journal.sqlite"


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
    path = tmp_path / "j.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
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
