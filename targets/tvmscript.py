"""TVMScript for the kernels: ``T`` (``tvm.script.tirx``), its macro calls made cheap.

Every kernel module takes ``T`` from here. TVM 0.27's ``ScriptMacro`` finds the
parser it expands into with :func:`inspect.getouterframes`, which builds a
``FrameInfo`` for every frame of the stack (the frame's source file, line
positions and context lines) at every macro call. The kernels' macros nest
(the work list's item, a sequence, its tiles, the rational tanh of
:mod:`.cpu.fastmath`), each level adding parser frames to the stack, so that
bookkeeping grew with every level: parsing three kernels (``tests/test_tvmscript.py``)
took 6.56 s with TVM's lookup and 0.66 s with the one below, and compiling the
sMNIST LSNN (TVM imported and another model compiled before) 8.2-8.9 s and
0.88-0.92 s, on this project's 2-core host.

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
