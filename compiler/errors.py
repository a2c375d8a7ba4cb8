"""The compiler's error: a model it cannot take, with the node and the reason."""
from __future__ import annotations

from lsnn.reference.errors import LsnnError


class CompileError(LsnnError):
    """A model the compiler cannot take, with the node and the reason."""
