"""TVMScript for the kernels: ``T`` (``tvm.script.tirx``), its macro calls made cheap.

Every kernel module takes ``T`` from here. TVM 0.27's ``ScriptMacro`` finds the
parser it expands into with :func:`inspect.getouterframes`, which builds a
``FrameInfo`` for every frame of the stack (the frame's source file, line
positions and context lines) at every macro call. The kernels' macros nest
(the work list's item, a sequence, its tiles, the rational tanh of
:mod:`.cpu.fastmath`), the stack at a call is a few hundred frames deep, and
that bookkeeping was 85% of compiling the sMNIST LSNN (6.9 s against 0.8 s
with the lookup below, on this project's 2-core host).

:func:`_find_parser` walks the same frames in the same order and returns the
same parser: the first one found in a frame's globals, as TVM's lookup does,
without reading any source. The kernels it produces are the same
(``tests/test_tvmscript.py`` compares them structurally).
"""
from __future__ import annotations

import sys

from tvm.script import tirx as T
from tvm.script.parser.core.parser import ScriptMacro

#: TVM's own lookup, kept for the test that compares the two
TVM_FIND_PARSER = ScriptMacro._find_parser_def


def _find_parser(self):
    frame = sys._getframe(1)
    while frame is not None:
        parser = frame.f_globals.get(ScriptMacro.parser_object_name)
        if parser is not None:
            return parser
        frame = frame.f_back
    raise RuntimeError(f"{ScriptMacro.parser_object_name} not available")


ScriptMacro._find_parser_def = _find_parser

__all__ = ["T"]
