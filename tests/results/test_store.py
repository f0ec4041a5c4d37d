"""The run store's promises, without training: one file mode, unique temp files, a failed
record never replacing a complete one, corrupt records named and moved aside."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from kdbench.results.files import FILE_MODE, StorageError, atomic_file, write_json_atomic
from kdbench.results.store import RunStore

RUN = "0123456789ab"


def record(status: str, **extra: object) -> dict:
    out = {"id": RUN, "kind": "student", "status": status, **extra}
    if status == "complete":
        out["metrics"] = {"miou": 50.0}
    return out


def test_a_failed_or_running_record_never_replaces_a_complete_one(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.write(record("failed", error="first try"))
    store.write(record("complete"))
    for status in ("failed", "running"):
        store.write(record(status, error="a late writer"))
        assert store.load(RUN)["status"] == "complete"


def test_files_get_one_mode_and_no_temporary_file_stays(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == FILE_MODE
    with pytest.raises(ValueError), atomic_file(tmp_path / "b.bin") as f:
        f.write(b"half")
        raise ValueError("the writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_concurrent_writers_of_one_file_never_collide(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(50):
                write_json_atomic(tmp_path / "shared.json", {"writer": n, "i": i})
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert json.loads((tmp_path / "shared.json").read_text())["i"] == 49
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


def test_a_folder_that_is_a_file_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match=r"file: cannot write: "):
        write_json_atomic(tmp_path / "file" / "x.json", {})


def test_corrupt_records_are_named_and_moved_aside(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.record_path(RUN).parent.mkdir(parents=True)
    store.record_path(RUN).write_text('{"id": "0123456789ab", "kind": "student", "status": "compl')
    assert store.status(RUN) == "corrupt"
    record_, problem = store.inspect(RUN)
    assert record_ is None and "not a readable run record" in problem
    assert [(i, r, p is not None) for i, r, p in store.scan()] == [(RUN, None, True)]
    assert list(store) == []
    aside = store.quarantine(RUN)
    assert aside.name == "record.json.corrupt-0" and store.status(RUN) == "missing"
