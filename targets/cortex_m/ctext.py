"""Everything the Cortex-M project's text is made of that does not come from its templates.

Names from a model (ONNX inputs, outputs, nodes; TVM's function names) reach the
generated C only through :func:`identifier` and :func:`comment`; numbers through
:func:`floats`; values for the Makefile through :func:`make_words`. The templates in
``firmware/`` are filled by :func:`fill`, which takes exactly the placeholders a
template names.
"""
from __future__ import annotations

import re
from importlib import resources

import numpy as np

from lsnn.compiler.importer import CompileError

_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")
_MAKE_WORD = re.compile(r"[A-Za-z0-9_.,=+\-/]+")
COMMENT_CHARS = 120


def identifier(name: str, prefix: str) -> str:
    """A C identifier for ``name``: ``prefix`` (which starts it with a letter) and ``name`` with every
    character outside ``[A-Za-z0-9_]`` replaced by ``_``."""
    return prefix + _NOT_IDENTIFIER.sub("_", name)


def comment(text) -> str:
    """``text`` quoted, as it may stand anywhere inside a C block comment: printable ASCII only
    (backslash, quote and anything else escaped as in a C string: ``\\n``, ``\\x..``,
    ``\\u....``), no comment delimiter, at most :data:`COMMENT_CHARS` characters."""
    safe = str(text).replace("\\", "\\\\").replace('"', '\\"')
    safe = safe.encode("ascii", "backslashreplace").decode("ascii")
    safe = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in safe)
    safe = safe.replace("*/", "*\\/").replace("/*", "/\\*")
    if len(safe) > COMMENT_CHARS:
        safe = safe[:COMMENT_CHARS - 3] + "..."
    return f'"{safe}"'


def float_literal(v) -> str:
    s = f"{float(v):.9g}"  # 9 significant digits round-trip every float32
    return (s if "." in s or "e" in s else s + ".0") + "f"


def floats(a: np.ndarray, what: str) -> str:
    """The values of ``a`` as the body of a C float array initialiser, eight to a line."""
    flat = np.asarray(a, np.float32).ravel()
    if not np.isfinite(flat).all():
        raise CompileError(f"{what} is not finite; cannot write it as C")
    items = [float_literal(v) for v in flat]
    return ",\n".join("  " + ", ".join(items[i:i + 8]) for i in range(0, len(items), 8))


def make_words(*words) -> str:
    """``words`` for a Makefile variable: each must be a plain flag or number (no spaces, quotes,
    ``$``, ``#``, ``;`` or newlines), so nothing can end the assignment or start a command."""
    for w in words:
        if not _MAKE_WORD.fullmatch(str(w)):
            raise CompileError(f"{str(w)!r} cannot go into the Makefile (only letters, digits and _.,=+-/)")
    return " ".join(map(str, words))


def template(name: str) -> str:
    return resources.files(__package__).joinpath("firmware", name).read_text()


def fill(name: str, values: dict) -> str:
    """The template ``firmware/<name>`` with each ``@KEY@`` replaced by ``values[KEY]``; every
    placeholder must have a value and every value a placeholder."""
    text = template(name)
    wanted = set(_PLACEHOLDER.findall(text))
    if wanted != set(values):
        raise CompileError(f"template {name}: placeholders {sorted(wanted)}, values for {sorted(values)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)
