"""ONNX ``LSTM``, ``GRU`` and ``RNN`` to Relax: one time-loop kernel call per direction.

Every node is normalised to forward-in-memory calls on ``[T, B, I]``: ``layout=1`` permutes
``X`` (and the initial states) to time-major and the outputs back; each direction's weights
are sliced (folded when constants, Relax ops when graph inputs) and transposed; ``reverse``
and ``sequence_lens`` are options of the kernel (:class:`lsnn.targets.cells.Cell`), and a
bidirectional node is a forward and a reverse call whose outputs are stacked on the
``num_directions`` axis. The plain forward LSTM with constant weights takes the target's
blocked ``LSTM`` kernel; everything else the target's ``Recurrent`` kernel. A plain LSTM whose
``Y`` a readout chain reads (:func:`lsnn.compiler.importer.lstm_readouts`: ``Squeeze``,
``MatMul`` by a constant, ``Add`` of a constant) takes the ``LSTM+Readout`` kernel where the
target has it: the readout of every step is computed in the time loop, and ``Y`` is stored
only when something else reads it.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from lsnn.compiler.errors import CompileError
from lsnn.targets.base import TargetError
from lsnn.targets.base import LSTM_READOUT
from lsnn.targets.base import RECURRENT as RECURRENT_KERNEL
from lsnn.targets.cells import ACTIVATIONS, DEFAULT_ACTIVATIONS, Activation, Cell

from .schema import RECURRENT

_CONST = tvm.ir.expr.Constant
DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _static(d, what: str, label: str) -> int:
    if isinstance(d, (int, tvm.tirx.IntImm)):
        return int(d)
    raise CompileError(f"{label}: the {what} must be known at compile time (it is {d})")


def _shape_values(v) -> list:
    return list(v.ty.shape.values)


def activations(op: str, a: dict, directions: int, label: str) -> list[tuple[Activation, ...]]:
    """Each direction's activations: the node's (``alpha`` and ``beta`` taken in order by the
    functions that have them, as onnxruntime takes them, else the function's default) or the
    op's defaults."""
    per = len(DEFAULT_ACTIVATIONS[op])
    names = [_text(n).lower() for n in a["activations"]] if a["activations"] else \
        list(DEFAULT_ACTIVATIONS[op]) * directions
    if len(names) != per * directions:
        raise CompileError(f"{label}: activations has {len(names)} function(s); {op} with {directions} "
                           f"direction(s) takes {per * directions}")
    unknown = [n for n in names if n not in ACTIVATIONS]
    if unknown:
        raise CompileError(f"{label}: activation '{unknown[0]}' is not one of ONNX's "
                           f"({', '.join(sorted(ACTIVATIONS))})")
    alphas, betas = list(a["activation_alpha"] or []), list(a["activation_beta"] or [])
    out = []
    for n in names:
        da, db = ACTIVATIONS[n]
        alpha = (alphas.pop(0) if alphas else da) if da is not None else None
        beta = (betas.pop(0) if betas else db) if db is not None else None
        out.append(Activation(n, alpha, beta))
    return [tuple(out[d * per:(d + 1) * per]) for d in range(directions)]


class RecurrentConverters:
    """The converters of ONNX's recurrent ops, mixed into :class:`lsnn.compiler.importer.LSNNImporter`
    (they use its block builder and helpers)."""

    # -- the node ------------------------------------------------------------
    def _recurrent(self, schema, inputs, attrs):
        x = self._bind(schema, inputs, attrs)
        label = self._label(schema.name, attrs)
        a = schema.attribute_values(attrs)
        direction = _text(a["direction"])
        if direction not in DIRECTIONS:
            raise CompileError(f"{label}: direction '{direction}' is not one of {', '.join(DIRECTIONS)}")
        if int(a["layout"]) not in (0, 1):
            raise CompileError(f"{label}: layout={a['layout']} is not 0 or 1")
        D = len(DIRECTIONS[direction])
        batch_first = int(a["layout"]) == 1
        X = self._time_major(x["X"]) if batch_first else x["X"]
        Tn, B, _ = self._shape_of(X)
        W, R = x["W"], x["R"]
        _, G, I = (_static(d, "size of W", label) for d in self._shape_of(W))
        H = _static(self._shape_of(R)[2], "hidden size (R's last axis)", label)
        dims_d = _static(self._shape_of(W)[0], "num_directions of W", label)
        if dims_d != D:
            raise CompileError(f"{label}: W has {dims_d} direction(s); direction={direction} takes {D}")
        weights = {k: x[k] for k in ("W", "R", "B", "P") if k in x and x[k] is not None}
        finite = self._finite_constants(label, weights)
        acts = activations(schema.name, a, D, label)
        lens = x["sequence_lens"]
        base = dict(op=schema.name, sequence_lens=lens is not None, finite_weights=finite,
                    peepholes=x.get("P") is not None, clip=None if a["clip"] is None else float(a["clip"]),
                    input_forget=bool(a.get("input_forget", 0)), linear_before_reset=bool(a.get("linear_before_reset", 0)))
        lens = self._lens(lens, B)
        read = self._outputs_read(schema, attrs)
        states = [x[s.input] for s in schema.states]
        if batch_first:
            states = [self._time_major(s) if s is not None else None for s in states]
        readout = self._lstm_readout(label, attrs, H) if D == 1 else None
        results = []
        for d, reverse in enumerate(DIRECTIONS[direction]):
            cell = Cell(activations=acts[d], reverse=reverse, **base)
            results.append(self._direction(cell, label, X, x, d, lens, states, (Tn, B, I, H, G), read, readout))
        return self._stacked(schema, results, batch_first)

    def _lstm_readout(self, label, attrs, H) -> dict | None:
        """The readout chain the LSTM node's kernel may compute (``key``: the pair's, ``W``
        ``[H, O]`` and ``bias`` ``[O]`` as constants, ``Y_elsewhere``), or None: no chain, no such
        kernel on the target, or values that do not fit (not float32 constants, a weight without
        ``H`` rows, a bias that broadcasts along more than the last axis); the chain's nodes are
        then converted as they are."""
        from lsnn.compiler.importer import PAIR, READ_ELSEWHERE, READOUT_INPUTS

        if PAIR not in attrs or not self.target.fuses_lstm_readout():
            return None
        w, b = (self._nodes[n.decode()] if n else None for n in attrs[READOUT_INPUTS])
        if not all(isinstance(v, _CONST) and v.value.dtype == "float32" for v in (w, b) if v is not None) \
                or w.value.numpy().ndim != 2 or w.value.shape[0] != H:
            return None
        O = int(w.value.shape[1])
        bias = b.value.numpy() if b is not None else np.zeros(O, np.float32)
        if bias.ndim > 3 or bias.size not in (1, O) or any(n != 1 for n in bias.shape[:-1]):
            return None
        self._finite_constants(f"{label}: readout", {"W": w, **({"bias": b} if b is not None else {})})
        return {"key": attrs[PAIR], "W": w, "bias": relax.const(np.ascontiguousarray(np.broadcast_to(bias.reshape(-1), (O,)))),
                "Y_elsewhere": bool(attrs[READ_ELSEWHERE])}

    def _direction(self, cell, label, X, x, d, lens, states, sizes, read, readout=None):
        """One kernel call: ``[Y [T, B, H], Y_h [B, H], (Y_c [B, H])]`` of direction ``d``; with a
        ``readout`` (:meth:`_lstm_readout`) that the plain LSTM's kernel computes, its result is
        left for the chain's last node."""
        Tn, B, I, H, G = sizes
        wt, rt = (self._slice_t(x[k], d) for k in ("W", "R"))
        bias = self._slice(x["B"], d, [2, G]) if x["B"] is not None else self._zeros([2, G])
        h0, c0 = (self._slice(s, d, [B, H]) if s is not None else self._zeros([B, H])
                  for s in (states + [None])[:2])
        dims = {"I": I, "H": H}
        outs = [[Tn, B, H], [B, H], [B, H]]
        if cell.plain() and "LSTM" in self.target.kernels:
            summed = self.bb.normalize(relax.op.sum(bias, axis=0))
            rt = relax.const(self.target.lstm_recurrent_layout(rt.value.numpy()))  # plain: a constant
            args = [X, wt, rt, summed, h0, c0]
            if readout is None:
                call = self._call(self._kernel(label, "LSTM", dims=dims, outputs=read), "lstm", args, outs)
            else:
                O = int(readout["W"].value.shape[1])
                kept = read if readout["Y_elsewhere"] else read - {"Y"}
                kernel = self._kernel(label, LSTM_READOUT, dims={**dims, "O": O}, outputs=kept)
                call = self._call(kernel, "lstm_readout", args + [readout["W"], readout["bias"]], outs + [[Tn, B, O]])
                self._readouts[readout["key"]] = self.bb.emit(relax.TupleGetItem(call, 3))
        else:
            p = self._slice(x["P"], d, [3 * H]) if cell.peepholes else self._zeros([3 * H])
            kernel = self._kernel(label, RECURRENT_KERNEL, dims=dims, cell=cell, outputs=read)
            call = self._call(kernel, cell.op.lower(), [X, wt, rt, bias, lens, p, h0, c0], outs)
        return [relax.TupleGetItem(call, k) for k in range(3)]

    def _stacked(self, schema, results, batch_first):
        """The node's outputs: each direction's on the ``num_directions`` axis, batch first when
        ``layout=1``."""
        emit = self.bb.emit

        def stacked(k, axis):  # one direction: a reshape, which the VM makes a view (no copy)
            parts = [self.bb.normalize(r[k]) for r in results]
            parts = [relax.op.reshape(p, [*_shape_values(p)[:axis], 1, *_shape_values(p)[axis:]]) for p in parts]
            return emit(parts[0] if len(parts) == 1 else relax.op.concat(parts, axis=axis))

        Y = stacked(0, 1)
        finals = [stacked(k, 0) for k in range(1, len(schema.outputs))]
        if batch_first:
            Y = emit(relax.op.permute_dims(Y, [2, 0, 1, 3]))
            finals = [emit(relax.op.permute_dims(f, [1, 0, 2])) for f in finals]
        return relax.Tuple([Y, *finals])

    # -- helpers ---------------------------------------------------------------
    def _kernel(self, label, op, **attrs):
        try:
            return self.target.kernel(op, **attrs)
        except TargetError as e:
            raise CompileError(f"{label}: {e}") from e

    def _shape_of(self, expr) -> list:
        from lsnn.compiler.importer import _shape

        return _shape(expr)

    def _time_major(self, v):
        """``[B, T, ...]`` <-> ``[T, B, ...]`` (layout=1's X and states)."""
        return self.bb.emit(relax.op.permute_dims(v, [1, 0, 2]))

    def _slice(self, v, d: int, shape: list):
        """Direction ``d`` of ``v`` (first axis), reshaped to ``shape``: folded for a constant."""
        if isinstance(v, _CONST):
            return relax.const(np.ascontiguousarray(v.value.numpy()[d].reshape([int(n) for n in shape])))
        part = relax.op.strided_slice(v, axes=[0], begin=[d], end=[d + 1])
        return self.bb.emit(relax.op.reshape(part, shape))

    def _slice_t(self, w, d: int):
        """Direction ``d`` of ``W`` or ``R`` (``[D, G, n]``), transposed to ``[n, G]``."""
        if isinstance(w, _CONST):
            return relax.const(np.ascontiguousarray(w.value.numpy()[d].T))
        part = relax.op.strided_slice(w, axes=[0], begin=[d], end=[d + 1])
        return self.bb.emit(relax.op.permute_dims(relax.op.squeeze(part, [0])))

    def _lens(self, lens, B):
        """``sequence_lens`` as the kernels take it (:class:`lsnn.targets.cells.Cell`: float32), a
        placeholder of zeros when the node has none (unread)."""
        if lens is None:
            return self._zeros([B])
        return self.bb.emit(relax.op.astype(lens, "float32"))
