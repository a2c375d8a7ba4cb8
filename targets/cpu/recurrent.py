"""One direction of an ONNX ``LSTM``, ``GRU`` or ``RNN`` node: the time loop inside.

The general form of the recurrent kernels (:class:`lsnn.targets.cells.Cell` says what it
computes and lists its arguments): any activations, ``clip``, reverse direction,
``sequence_lens``, peepholes, coupled input and forget gates, GRU's two forms, weights given
at run time. The plain forward LSTM with constant weights keeps its blocked kernel
(:mod:`.lstm`).

Each sequence is one item of the batch's work list (:func:`.worklist.each`). Per step: the input
projection ``Wb + X[t] @ W^T`` (rows of ``W^T`` of the nonzero inputs only when the weights
are finite constants, so that skipping a zero is exact; every row otherwise, as ``0 * Inf``
is NaN), the recurrent product ``Rb + h @ R^T`` (every row: ``h`` is rarely sparse), each a
loop over ``k`` of contiguous vector rows, then the cell. Sequence ``b`` runs steps
``0 .. lens[b]-1`` (``lens[b]-1 .. 0`` in reverse), as onnxruntime does; ``Y`` is 0 at the
steps past its length and ``Y_h``/``Y_c`` are the states after its last step. No libm
calls in the default activations (they would dominate): tanh is the rational one of
:mod:`.fastmath`, sigmoid that of :mod:`.expmath` (``0.5 tanh(x/2) + 0.5`` saturates short of 1,
off by more than ONNX's GRU cases allow); the others follow ONNX's definitions. ``Y``, ``Y_h`` and ``Y_c`` are stored only when read
(``outputs``).

``vector=False`` is the form for code generators that print no vector types or parallel
loops (TVM's C): the same loops, serial.
"""
from __future__ import annotations

from tvm import tirx

from ..cells import Cell
from ..tvmscript import T
from . import expmath, fastmath
from .floatops import at_least, at_most, nonzero
from .worklist import each

#: the recurrent kernels' outputs (ONNX names)
OUTPUTS = frozenset({"Y", "Y_h", "Y_c"})


def _f32(v: float):
    return tirx.const(float(v), "float32")


def activation(a):
    """The TIR function of activation ``a`` (:class:`lsnn.targets.cells.Activation`), with ONNX's
    definition; NaN passes through each select."""
    alpha, beta = _f32(a.alpha if a.alpha is not None else 0.0), _f32(a.beta if a.beta is not None else 0.0)
    zero, one = _f32(0.0), _f32(1.0)
    return {
        "sigmoid": expmath.sigmoid,
        "tanh": fastmath.tanh,
        "relu": lambda x: tirx.Select(x < zero, zero, x),
        "affine": lambda x: alpha * x + beta,
        "leakyrelu": lambda x: tirx.Select(x < zero, alpha * x, x),
        "thresholdedrelu": lambda x: tirx.Select(x > alpha, x, zero),
        "scaledtanh": lambda x: alpha * fastmath.tanh(beta * x),
        "hardsigmoid": lambda x: at_least(at_most(alpha * x + beta, one), zero),
        "elu": lambda x: tirx.Select(x < zero, alpha * (expmath.exp(x) - one), x),
        "softsign": lambda x: x / (one + tirx.Select(x < zero, -x, x)),
        "softplus": lambda x: tirx.log(one + expmath.exp(x)),
    }[a.name]


def recurrent_kernel(*, dims: dict, cell: Cell, outputs=OUTPUTS, vector: bool = True):
    """The kernel of one direction of ``cell`` for ``dims`` (``I``, ``H``: static), storing only
    ``outputs``."""
    unknown = set(outputs) - OUTPUTS
    if unknown:
        raise ValueError(f"{cell.op} kernel: unknown output(s) {sorted(unknown)} (it has {sorted(OUTPUTS)})")
    return _kernel(int(dims["I"]), int(dims["H"]), cell, bool(vector),
                   store_y="Y" in outputs, store_h="Y_h" in outputs, store_c="Y_c" in outputs and cell.op == "LSTM")


#: the widest vector loop: 8 AVX2 registers of sums, enough independent FMA chains
WIDEST = 64


def _width(n: int) -> int:
    """The largest power of two up to :data:`WIDEST` that divides ``n``: each vector loop is cut
    into loops of that many lanes (LLVM turns a vector of 384 lanes into scalar code)."""
    w = WIDEST
    while n % w:
        w //= 2
    return w


def _clipped(cell: Cell):
    if cell.clip is None:
        return lambda x: x
    bound = _f32(cell.clip)
    return lambda x: at_least(at_most(x, bound), -bound)


class Units:
    """The cell's update of one unit ``k`` of one direction, as TIR macros over a step's buffers,
    shared by the CPU's loops over ``k`` and the GPU's threads (one per ``k``):

    - ``G [gates*H]``: ``Wb + X[t] @ W^T``; for the LSTM also ``+ Q`` (:attr:`adds_q`: the caller
      adds the recurrent product first, column by column);
    - ``Q [rec_gates*H]``: ``Rb + h @ R^T`` of the first :attr:`rec_gates` gates;
    - ``Q2 [H]``: GRU without ``linear_before_reset`` only (:attr:`needs_q2`): ``Rb_h + (r*h) @ R_h^T``,
      computed by the caller between :meth:`first` and :meth:`last` from ``cs``, which holds
      ``r*h`` after :meth:`first`;
    - ``hs``, ``cs [H]``: the state (``cs``: the LSTM's cell; the GRU's ``r`` or ``r*h``).

    Every unit's :meth:`first` happens before any unit's :meth:`last` when :attr:`needs_q2`;
    otherwise each unit reads only its own ``k`` and :meth:`first` is nothing."""

    def __init__(self, cell: Cell, nH: int):
        self.adds_q = cell.op == "LSTM"
        self.needs_q2 = cell.op == "GRU" and not cell.linear_before_reset
        self.rec_gates = 2 if self.needs_q2 else cell.gates  # the GRU's h gate: its product comes after r
        self.first, self.last = {"LSTM": _lstm_units, "GRU": _gru_units, "RNN": _rnn_units}[cell.op](cell, nH)
        self.cell = cell

    def steps(self, Lens, b, nT):
        """The steps sequence ``b`` runs: ``lens[b]`` with ``sequence_lens`` (within ``0 .. nT``), else ``nT``."""
        n = T.Cast("int64", Lens[b]) if self.cell.sequence_lens else nT
        return T.max(T.min(n, nT), T.int64(0))

    def time(self, n, s):
        """The time index of step ``s`` of a sequence of ``n`` steps (backwards with ``reverse``)."""
        return n - 1 - s if self.cell.reverse else s


def _lstm_units(cell: Cell, nH: int):
    f, g, h = (activation(a) for a in cell.activations)
    clip = _clipped(cell)
    peep = cell.peepholes
    coupled = cell.input_forget

    def pre(G, P, cprev, k, gate):  # gate: 0 i, 1 o, 2 f, 3 c
        x = G[gate * nH + k]
        return clip(x + P[gate * nH + k] * cprev) if peep and gate < 3 else clip(x)

    def forget(G, P, c, k):
        return _f32(1.0) - f(pre(G, P, c[k], k, 0)) if coupled else f(pre(G, P, c[k], k, 2))

    @T.macro
    def last(G, Q, Q2, hs, cs, P, k):
        cs[k] = forget(G, P, cs, k) * cs[k] + f(pre(G, P, cs[k], k, 0)) * g(clip(G[nH * 3 + k]))
        hs[k] = f(pre(G, P, cs[k], k, 1)) * h(cs[k])

    return None, last


def _gru_units(cell: Cell, nH: int):
    f, g = (activation(a) for a in cell.activations)
    clip = _clipped(cell)

    if cell.linear_before_reset:
        @T.macro
        def last(G, Q, Q2, hs, cs, P, k):  # cs holds r
            cs[k] = f(clip(G[nH + k] + Q[nH + k]))
            hs[k] = (_f32(1.0) - f(clip(G[k] + Q[k]))) * g(clip(G[nH * 2 + k] + cs[k] * Q[nH * 2 + k])) + \
                f(clip(G[k] + Q[k])) * hs[k]
        return None, last

    @T.macro
    def first(G, Q, hs, cs, k):  # cs holds r * h
        cs[k] = f(clip(G[nH + k] + Q[nH + k])) * hs[k]

    @T.macro
    def last(G, Q, Q2, hs, cs, P, k):
        hs[k] = (_f32(1.0) - f(clip(G[k] + Q[k]))) * g(clip(G[nH * 2 + k] + Q2[k])) + f(clip(G[k] + Q[k])) * hs[k]

    return first, last


def _rnn_units(cell: Cell, nH: int):
    f = activation(cell.activations[0])
    clip = _clipped(cell)

    @T.macro
    def last(G, Q, Q2, hs, cs, P, k):
        hs[k] = f(clip(G[k] + Q[k]))

    return None, last


def _step(units: Units, nH: int, vec):
    """The cell of every unit after the products: a loop over ``k`` of :class:`Units`."""
    first, last = units.first, units.last
    adds_q, needs_q2 = units.adds_q, units.needs_q2
    wG, wH = _width(nH * 4), _width(nH)

    @T.macro
    def step(G, Q, Q2, hs, cs, P, RT, Bias):
        if adds_q:
            for jo in range(nH * 4 // wG):
                for jj in vec(wG):
                    G[jo * wG + jj] = G[jo * wG + jj] + Q[jo * wG + jj]
        if needs_q2:
            for k in range(nH):
                first(G, Q, hs, cs, k)
            for jo in range(nH // wH):
                for jj in vec(wH):
                    Q2[jo * wH + jj] = Bias[1, nH * 2 + jo * wH + jj]
                for k in range(nH):
                    for jj in vec(wH):
                        Q2[jo * wH + jj] = Q2[jo * wH + jj] + cs[k] * RT[k, nH * 2 + jo * wH + jj]
        for k in range(nH):
            last(G, Q, Q2, hs, cs, P, k)

    return step


def _kernel(nI: int, nH: int, cell: Cell, vector: bool, store_y: bool, store_h: bool, store_c: bool):
    nG = cell.gates * nH
    vec = T.vectorized if vector else T.serial
    units = Units(cell, nH)
    step = _step(units, nH, vec)
    nQ = units.rec_gates * nH  # columns of the recurrent product before the cell
    wG, wQ = _width(nG), _width(nQ)
    events = cell.finite_weights
    # buffer sizes: static for LLVM; each its own variable in the C form, which the Cortex-M
    # pipeline specialises per call site (it takes only independent variables); loops use the ints
    dI, dH, dG, dP, d2 = (n if vector else tirx.Var(name, "int64")
                          for n, name in ((nI, "nI"), (nH, "nH"), (nG, "nG"), (nH * 3, "nP"), (2, "n2")))

    time = units.time

    @T.macro
    def sequence(b, X, WT, RT, Bias, Lens, P, H0, C0, Y, FH, FC):
        """Sequence ``b`` of the batch, with its state in ``H``-long buffers."""
        nT = T.meta_var(X.shape[0])
        hs = T.alloc_buffer((nH,), "float32")
        cs = T.alloc_buffer((nH,), "float32")
        G = T.alloc_buffer((nG,), "float32")
        Q = T.alloc_buffer((nG,), "float32")
        Q2 = T.alloc_buffer((nH,), "float32")
        n = T.alloc_buffer((1,), "int64", scope="local")
        n[0] = units.steps(Lens, b, nT)
        for k in range(nH):
            hs[k] = H0[b, k]
            cs[k] = C0[b, k]
        for s in range(n[0]):
            for jo in range(nG // wG):
                for jj in vec(wG):
                    G[jo * wG + jj] = Bias[0, jo * wG + jj]
            for i in range(nI):
                if events:
                    if nonzero(X[time(n[0], s), b, i]):
                        for jo in range(nG // wG):
                            for jj in vec(wG):
                                G[jo * wG + jj] = G[jo * wG + jj] + X[time(n[0], s), b, i] * WT[i, jo * wG + jj]
                else:
                    for jo in range(nG // wG):
                        for jj in vec(wG):
                            G[jo * wG + jj] = G[jo * wG + jj] + X[time(n[0], s), b, i] * WT[i, jo * wG + jj]
            for jo in range(nQ // wQ):  # a block of columns, its sums kept over all k
                for jj in vec(wQ):
                    Q[jo * wQ + jj] = Bias[1, jo * wQ + jj]
                for k in range(nH):
                    for jj in vec(wQ):
                        Q[jo * wQ + jj] = Q[jo * wQ + jj] + hs[k] * RT[k, jo * wQ + jj]
            step(G, Q, Q2, hs, cs, P, RT, Bias)
            if store_y:
                for k in range(nH):
                    Y[time(n[0], s), b, k] = hs[k]
        if store_y:
            for t in range(n[0], nT):
                for k in range(nH):
                    Y[t, b, k] = T.float32(0)
        for k in range(nH):
            if store_h:
                FH[b, k] = hs[k]
            if store_c:
                FC[b, k] = cs[k]

    @T.prim_func(private=True)
    def recurrent(x: T.handle, wt: T.handle, rt: T.handle, bias: T.handle, lens: T.handle, p: T.handle,
                  h0: T.handle, c0: T.handle, yo: T.handle, fh: T.handle, fc: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        X = T.match_buffer(x, (nT, nB, dI), "float32")
        WT = T.match_buffer(wt, (dI, dG), "float32")
        RT = T.match_buffer(rt, (dH, dG), "float32")
        Bias = T.match_buffer(bias, (d2, dG), "float32")
        Lens = T.match_buffer(lens, (nB,), "float32")
        P = T.match_buffer(p, (dP,), "float32")
        H0 = T.match_buffer(h0, (nB, dH), "float32")
        C0 = T.match_buffer(c0, (nB, dH), "float32")
        Y = T.match_buffer(yo, (nT, nB, dH), "float32")
        FH = T.match_buffer(fh, (nB, dH), "float32")
        FC = T.match_buffer(fc, (nB, dH), "float32")
        each(nB, vector, lambda b: sequence(b, X, WT, RT, Bias, Lens, P, H0, C0, Y, FH, FC))

    return recurrent
