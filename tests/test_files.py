"""Writing files and folders: nothing the suite did not write is replaced, nothing half-written stays."""
import errno
import os
import subprocess
import sys
import threading

import pytest

from lsnn.reference.errors import OutputError
from lsnn.reference.files import MARKER, atomic_write, check_destination, check_file_destination, write_folder


def _fill(tag):
    def fill(tmp):
        for k in range(20):
            (tmp / f"part{k}.txt").write_text(tag)
        return tag
    return fill


def _leftovers(parent):
    return [p.name for p in parent.iterdir() if ".tmp." in p.name or ".old." in p.name or p.name.endswith(".tmp")]


def test_a_folder_holding_a_data_file_is_never_replaced(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    (d / "data.csv").write_text("1,2,3\n")
    with pytest.raises(OutputError, match="was not written by lsnn"):
        write_folder(d, _fill("x"), "bench report")
    assert (d / "data.csv").read_text() == "1,2,3\n" and sorted(os.listdir(d)) == ["data.csv"]
    assert _leftovers(tmp_path) == []


def test_a_manifest_json_does_not_make_a_folder_ours(tmp_path):
    d = tmp_path / "webapp"
    d.mkdir()
    (d / "manifest.json").write_text("{}")
    (d / "index.js").write_text("console.log(1)")
    with pytest.raises(OutputError, match=f"no {MARKER} in it"):
        write_folder(d, _fill("x"), "compiled artifact")
    assert sorted(os.listdir(d)) == ["index.js", "manifest.json"]


def test_an_own_or_empty_folder_is_replaced_whole(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    assert write_folder(d, _fill("a"), "report") == "a"  # empty: taken
    (d / "stale.txt").write_text("from the previous run")
    write_folder(d, _fill("b"), "report")  # ours (marker): replaced whole
    assert "stale.txt" not in os.listdir(d) and (d / "part0.txt").read_text() == "b" and (d / MARKER).is_file()


def test_unwritable_destinations_fail_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a path under a regular file cannot be written, even by root
    with pytest.raises(OutputError, match="is not a writable folder"):
        check_destination(blocker / "out", "bench report")
    with pytest.raises(OutputError, match="is not a writable folder"):
        check_file_destination(blocker / "x.onnx", "ONNX file")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_destination(blocker, "bench report")
    with pytest.raises(OutputError, match="is a folder"):
        check_file_destination(tmp_path, "ONNX file")


def test_the_current_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "manifest.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    for spelling in (".", str(tmp_path), "sub/..", ".."):
        with pytest.raises(OutputError, match="current folder or holds it"):
            write_folder(spelling, _fill("x"), "compiled artifact")
    assert os.listdir(tmp_path) == ["manifest.json"] and _leftovers(tmp_path.parent) == []


def test_a_full_disk_gives_an_output_error_and_leaves_nothing(tmp_path, monkeypatch):
    def full(tmp):
        (tmp / "part.txt").write_text("x")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputError, match="No space left on device"):
        write_folder(tmp_path / "out", full, "bench report")
    assert os.listdir(tmp_path) == []

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write(tmp_path / "model.onnx", lambda f: f.write(b"onnx"))
    assert os.listdir(tmp_path) == []


def _assert_whole(d):
    tags = {(d / f"part{k}.txt").read_text() for k in range(20)}
    assert len(tags) == 1 and sorted(os.listdir(d)) == sorted([MARKER] + [f"part{k}.txt" for k in range(20)])


def test_concurrent_writers_of_one_folder_all_land_whole(tmp_path):
    d, errors = tmp_path / "out", []

    def writer(i):
        for n in range(20):
            try:
                write_folder(d, _fill(f"{i}.{n}"), "report")
            except Exception as e:  # noqa: BLE001 (any failure is the test's failure)
                errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _assert_whole(d)
    assert _leftovers(tmp_path) == []


def test_concurrent_processes_saving_one_folder_both_succeed(tmp_path):
    script = ("import sys\nfrom pathlib import Path\nfrom lsnn.reference.files import write_folder\n"
              "def fill(tmp):\n    [(tmp / f'part{k}.txt').write_text(sys.argv[2]) for k in range(20)]\n"
              "for _ in range(15):\n    write_folder(Path(sys.argv[1]), fill, 'report')\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out"), tag], stderr=subprocess.PIPE,
                              text=True) for tag in ("a", "b")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    _assert_whole(tmp_path / "out")
    assert _leftovers(tmp_path) == []


def test_the_destination_check_waits_for_a_writer_swapping_the_folder(tmp_path):
    """Mid-swap the folder is briefly absent or half-renamed: a check must not look at it then."""
    from lsnn.reference.files import _locked

    write_folder(tmp_path / "out", _fill("a"), "report")
    checked = threading.Event()
    with _locked(tmp_path, "report"):  # another writer is swapping a folder in tmp_path
        t = threading.Thread(target=lambda: (check_destination(tmp_path / "out", "report"), checked.set()))
        t.start()
        assert not checked.wait(0.3)
    assert checked.wait(10)
    t.join()
