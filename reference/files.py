"""Writing files and folders so that nothing is lost or half-written.

* :func:`atomic_write`: a file is written under a temporary name and renamed
  into place.
* :func:`write_folder`: a folder (compiled artifact, bench report) is filled
  in a temporary sibling and swapped in. An existing folder is replaced only
  when it is empty or carries the marker :data:`MARKER` that this function
  writes, so a folder the suite did not write is never deleted. Swaps are
  serialised by a lock on the parent folder, so concurrent writers of one
  folder each land whole, one after the other.
* :func:`check_destination`: the same checks, run before long work starts.

Torch-free: loading and running an artifact must not import PyTorch.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError, MissingFileError, OutputError

MARKER = ".lsnn-folder"


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(binary_file)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def read_json(path: str | Path, error: type[Exception] = ConfigError, what: str = "file"):
    """The JSON in ``path``; a missing or broken file raises an error naming the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise MissingFileError(f"{what} not found: {path}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read the {what} ({e})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: corrupt {what}, not valid JSON ({e})") from e


def _owned(directory: Path) -> bool:
    return (directory / MARKER).is_file()


def check_destination(directory: str | Path, kind: str) -> Path:
    """Raise :class:`OutputError` unless ``directory`` can be written as a ``kind`` folder:
    it is new, empty, or one this module wrote, it is not the current folder or one above it,
    and its parent is writable. Returns the absolute path. Run it before long work starts."""
    directory = Path(os.path.abspath(directory))
    _check_parent(directory, kind)
    if directory.parent.is_dir():
        with _locked(directory.parent, kind):  # not while another writer swaps it
            _check_replaceable(directory, kind)
    else:
        _check_replaceable(directory, kind)
    return directory


def check_file_destination(path: str | Path, kind: str) -> Path:
    """Raise :class:`OutputError` unless :func:`atomic_write` can write the file ``path``
    (not a folder, in a writable folder). Returns the absolute path."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise OutputError(f"{path} is a folder; name a file to write the {kind} to")
    _check_parent(path, kind)
    return path


def _check_parent(path: Path, kind: str) -> None:
    probe = path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the {kind} to {path}: {probe} is not a writable folder")


def _check_replaceable(directory: Path, kind: str) -> None:
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory} exists and is not a folder; not replacing it with the {kind}")
    cwd = Path.cwd().resolve()
    if directory.exists() and (directory.resolve() == cwd or directory.resolve() in cwd.parents):
        raise OutputError(f"{directory} is the current folder or holds it; name a new folder for the {kind}")
    if directory.is_dir() and any(directory.iterdir()) and not _owned(directory):
        raise OutputError(f"{directory} exists and was not written by lsnn (no {MARKER} in it); not replacing "
                          f"it: name a new or empty folder for the {kind}")


@contextmanager
def _locked(parent: Path, kind: str):
    """An exclusive lock on the folder ``parent``: one writer at a time swaps folders in it."""
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError as e:
        raise OutputError(f"cannot write the {kind} into {parent}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_folder(directory: str | Path, fill, kind: str):
    """Fill a new folder with ``fill(tmp)`` and swap it in at ``directory`` whole.
    Returns what ``fill`` returns. See the module docstring for what may be replaced."""
    directory = check_destination(directory, kind)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp."))
    except OSError as e:
        raise OutputError(f"cannot write the {kind} to {directory}: {e.strerror}") from e
    try:
        result = fill(tmp)
        (tmp / MARKER).write_text(json.dumps({"written_by": "lsnn", "kind": kind}) + "\n")
        with _locked(directory.parent, kind):
            _check_replaceable(directory, kind)  # again: another writer may have written it meanwhile
            if directory.exists():
                old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old."))
                try:
                    directory.rename(old / "previous")
                    try:
                        tmp.rename(directory)
                    except BaseException:
                        (old / "previous").rename(directory)  # put the previous folder back
                        raise
                finally:
                    shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(directory)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM, errno.EBUSY):
            raise OutputError(f"cannot write the {kind} to {directory}: {e.strerror}") from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


#: the array an inputs file (.npz) may hold beside the model's inputs: one class per sequence
LABELS = "labels"


def read_npz(path: str | Path) -> dict:
    """The arrays of an .npz file by name (no pickled objects)."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"inputs file not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: not a readable .npz file ({e})") from e

