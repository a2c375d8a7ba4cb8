"""ai.lsnn::ALIF for Cortex-M: a TIR kernel written for TVM's C output and small cores.

On the microcontroller the kernel runs one time step per call (``T = 1``), so
everything that is per call is per step; it is written for that:

* the state is read from the initial-state inputs and written to the final-state
  outputs (the generated model swaps the two halves of its state each step: no
  copies); for ``T > 1`` later steps read the final-state outputs;
* the spike list: the previous step's spikes are gathered once, :data:`.events.GROUP`
  neurons tested at a time, and later steps of the same call take it from the update;
* both products are event-driven over those lists (rows of ``W^T`` of nonzero
  inputs, of ``R^T`` of neurons that spiked) and blocked: :data:`BLOCK` neurons'
  input and recurrent currents stay in registers while every event's row segment
  is added, each neuron summing its events in the same order as the CPU kernel;
  the neurons after the last full block go in blocks of 4, 2 and 1
  (:func:`.events.blocks`);
* the neuron update is one loop over contiguous arrays. On a core with Helium
  (``vector``: the M55) its selects are integer masks on the float bits, no
  branch, and GCC turns the loop into MVE code; on the M4 and M7 they are float
  selects, which GCC compiles into a compare and a rarely taken branch: fewer
  instructions than the masks on a scalar FPU;
* ``V`` and ``A`` are stored only when the graph reads them (``outputs``);
* an LI readout of the spikes (``ALIF+LI``: the importer pairs the nodes) is
  computed in the same call over the step's spike list, which the kernel makes
  anyway for the next step: no second scan of the spikes, no second call, and
  ``Z`` is stored only when something else reads it.

NaN and Inf inputs and spikes count as events (:func:`..cpu.floatops.nonzero`); a
NaN membrane never spikes. ``events=False`` gives the dense kernel (every row
visited), kept to measure what events save; so does ``finite_weights=False``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from tvm import tirx
from tvm.tirx import bitwise_and, bitwise_not

from ..cpu.floatops import at_least
from ..tvmscript import T
from .bits import bits, choose, const_bits, negative, positive, zero
from .events import BLOCK, blocks, gather
from .li import Events
from .li import readout as li_readout

#: the op's outputs a kernel stores only on request; the rest are always written
OPTIONAL = ("V", "A")


def _spike_float(v, A, r, n_ref):
    """``s = H(v - A) * (r == 0)`` and the next refractory count, as float selects (GCC makes a
    compare and a rarely taken branch of each on a scalar FPU). Comparisons are false for NaN."""
    s = T.Select(tirx.all(v > A, r == T.float32(0)), T.float32(1), T.float32(0))
    return s, T.Select(s > T.float32(0), T.float32(n_ref), at_least(r - T.float32(1), T.float32(0)))


def _spike_bits(v, A, r, n_ref):
    """The same as integer masks on the bits (:mod:`.bits`): no branch, so GCC vectorises the loop.
    ``v - A > 0`` is ``v > A`` in IEEE arithmetic (gradual underflow; Inf - Inf is NaN)."""
    spiked = bitwise_and(positive(v - A), zero(r))
    r_down = r - T.float32(1)
    return (choose(spiked, const_bits(1.0), T.uint32(0)),
            choose(spiked, const_bits(n_ref), bitwise_and(bits(r_down), bitwise_not(negative(r_down)))))


@dataclass(frozen=True)
class _Neuron:
    """What the kernel's macros need of the node and the core."""
    thr: float
    n_ref: float
    #: a core with Helium: the spike and refractory selects as masks (GCC vectorises the loop)
    vector: bool
    keep_v: bool
    keep_a: bool
    keep_z: bool
    #: events: only nonzero inputs and spikes are listed (else every entry: the dense kernel)
    skip: bool
    #: the LI readout of the spikes is computed here (``ALIF+LI``)
    fused: bool

    def spike(self, v, A, r):
        """``(s, next r)`` of a neuron: :func:`_spike_bits` on a vector core, else :func:`_spike_float`."""
        return (_spike_bits if self.vector else _spike_float)(v, A, r, self.n_ref)

    def spike_of(self, FZ, b, k):
        """The spike of neuron ``k`` of the spike list made from ``FZ``: exactly 1 when only spikes
        are listed (so ``1 * w`` is ``w``), else (the dense kernel lists every neuron) its value."""
        return T.float32(1) if self.skip else FZ[b, k]


def alif_kernel(*, thr: float, n_refractory: int, dims: dict, finite_weights: bool, events: bool,
                vector: bool, outputs: frozenset | None = None, readout: frozenset | None = None):
    """The kernel for one node's attributes (``dims`` unused: shapes stay symbolic until the
    step graph specialises them). ``outputs``: the node's outputs the graph reads (None: all).
    ``vector``: the spike and refractory selects as integer masks (no branch: GCC vectorises the
    update loop for Helium); else as float selects (fewer instructions on a scalar FPU).
    ``readout``: the outputs read of the LI node that reads the spikes (``ALIF+LI``), computed
    here over the step's spike list (:func:`.li.readout`); ``Z`` is then stored only when
    something else reads it (``"Z" in outputs``)."""
    skip = bool(events) and bool(finite_weights)
    keep_v, keep_a = (outputs is None or name in outputs for name in OPTIONAL)
    keep_z = readout is None or outputs is None or "Z" in outputs
    return _kernel(_Neuron(float(thr), float(n_refractory), bool(vector), keep_v,
                           keep_a, keep_z, skip, readout is not None))


@functools.cache
def _kernel(neuron: _Neuron):
    """The kernel of ``neuron``, built once per process (TVMScript parses the macros of every
    build anew, about a second for this one)."""
    skip = neuron.skip

    @T.macro(hygienic=False)
    def update(h, current, neuron):
        """Neuron ``h`` at step ``t`` of sequence ``b``, its input plus recurrent current given."""
        z = T.bind(T.if_then_else(t == 0, Z0[b, h], FZ[b, h]))
        r = T.bind(T.if_then_else(t == 0, R0[b, h], FR[b, h]))
        a_new = T.bind(Rho[h] * T.if_then_else(t == 0, A0[b, h], FA[b, h]) + (T.float32(1) - Rho[h]) * z)
        A_h = T.bind(T.float32(neuron.thr) + Beta[h] * a_new)
        v_new = T.bind(Alpha[h] * T.if_then_else(t == 0, V0[b, h], FV[b, h])
                       + (T.float32(1) - Alpha[h]) * current - A_h * z)
        s_h = T.bind(neuron.spike(v_new, A_h, r)[0])
        FR[b, h] = neuron.spike(v_new, A_h, r)[1]
        FA[b, h] = a_new
        FV[b, h] = v_new
        FZ[b, h] = s_h
        if neuron.keep_z:
            Z[t, b, h] = s_h
        if neuron.keep_v:
            V[t, b, h] = v_new
        if neuron.keep_a:
            A[t, b, h] = A_h

    @T.macro(hygienic=False)
    def accumulate(h0, width, neuron):
        """``cur[h0 + j] = c[j] + q[j]``, ``j < width``: the input and the recurrent current of
        those neurons, each summed in registers over the events (the previous step's spikes
        from ``FZ`` after the first step: this step's update has not written it yet)."""
        for j in T.unroll(width):
            c[j] = T.float32(0)
            q[j] = T.float32(0)
        for e in range(n_in[0]):
            for j in T.unroll(width):
                c[j] = c[j] + X[t, b, ev_in[e]] * WT[ev_in[e], h0 + j]
        for e in range(n_sp[0]):
            for j in T.unroll(width):
                q[j] = q[j] + (T.if_then_else(t == 0, Z0[b, ev_sp[e]], neuron.spike_of(FZ, b, ev_sp[e]))
                               * RT[ev_sp[e], h0 + j])
        for j in T.unroll(width):
            cur[h0 + j] = c[j] + q[j]

    @T.macro(hygienic=False)
    def step(neuron, accumulate=accumulate, update=update):
        """Step ``t`` of sequence ``b`` (names of the kernel's scope; the macros it calls come in
        as defaults). Afterwards ``ev_sp`` lists the step's spikes when the readout or a later
        step reads them."""
        gather(X, (t, b), nI, skip, ev_in, n_in)
        blocks(nH, accumulate, neuron)
        for h in range(nH):
            update(h, cur[h], neuron)
        if neuron.fused:
            gather(FZ, (b,), nH, skip, ev_sp, n_sp)
        elif t + 1 < nT:
            gather(FZ, (b,), nH, skip, ev_sp, n_sp)

    if neuron.fused:
        return _with_readout(neuron, step)

    @T.prim_func(private=True)
    def alif(x: T.handle, wt: T.handle, rt: T.handle, beta: T.handle, alpha: T.handle, rho: T.handle,
             v0: T.handle, a0: T.handle, z0: T.handle, r0: T.handle,
             zo: T.handle, vo: T.handle, ao: T.handle, fv: T.handle, fa: T.handle, fz: T.handle, fr: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        nI = T.int64()
        nH = T.int64()
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WT = T.match_buffer(wt, (nI, nH), "float32")
        RT = T.match_buffer(rt, (nH, nH), "float32")
        Beta = T.match_buffer(beta, (nH,), "float32")
        Alpha = T.match_buffer(alpha, (nH,), "float32")
        Rho = T.match_buffer(rho, (nH,), "float32")
        V0 = T.match_buffer(v0, (nB, nH), "float32")
        A0 = T.match_buffer(a0, (nB, nH), "float32")
        Z0 = T.match_buffer(z0, (nB, nH), "float32")
        R0 = T.match_buffer(r0, (nB, nH), "float32")
        Z = T.match_buffer(zo, (nT, nB, nH), "float32")
        V = T.match_buffer(vo, (nT, nB, nH), "float32")
        A = T.match_buffer(ao, (nT, nB, nH), "float32")
        FV = T.match_buffer(fv, (nB, nH), "float32")
        FA = T.match_buffer(fa, (nB, nH), "float32")
        FZ = T.match_buffer(fz, (nB, nH), "float32")
        FR = T.match_buffer(fr, (nB, nH), "float32")
        ev_in = T.alloc_buffer((nI,), "int32")
        ev_sp = T.alloc_buffer((nH,), "int32")
        n_in = T.alloc_buffer((1,), "int32")
        n_sp = T.alloc_buffer((1,), "int32")
        cur = T.alloc_buffer((nH,), "float32")
        c = T.alloc_buffer((BLOCK,), "float32")
        q = T.alloc_buffer((BLOCK,), "float32")
        for b in range(nB):
            gather(Z0, (b,), nH, skip, ev_sp, n_sp)
            for t in range(nT):
                step(neuron)

    return alif


def _with_readout(neuron: _Neuron, step):
    """The ``ALIF+LI`` kernel: the ALIF's ``step``, then the LI readout over the step's spike list
    (the names ``step`` reads are this kernel's too)."""
    skip = neuron.skip

    @T.prim_func(private=True)
    def alif_li(x: T.handle, wt: T.handle, rt: T.handle, beta: T.handle, alpha: T.handle, rho: T.handle,
                v0: T.handle, a0: T.handle, z0: T.handle, r0: T.handle,
                wot: T.handle, alpha_o: T.handle, bias_o: T.handle, y0: T.handle,
                zo: T.handle, vo: T.handle, ao: T.handle, fv: T.handle, fa: T.handle, fz: T.handle, fr: T.handle,
                yo: T.handle, fy: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        nI = T.int64()
        nH = T.int64()
        nO = T.int64()
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WT = T.match_buffer(wt, (nI, nH), "float32")
        RT = T.match_buffer(rt, (nH, nH), "float32")
        Beta = T.match_buffer(beta, (nH,), "float32")
        Alpha = T.match_buffer(alpha, (nH,), "float32")
        Rho = T.match_buffer(rho, (nH,), "float32")
        V0 = T.match_buffer(v0, (nB, nH), "float32")
        A0 = T.match_buffer(a0, (nB, nH), "float32")
        Z0 = T.match_buffer(z0, (nB, nH), "float32")
        R0 = T.match_buffer(r0, (nB, nH), "float32")
        WoT = T.match_buffer(wot, (nH, nO), "float32")
        AlphaO = T.match_buffer(alpha_o, (nO,), "float32")
        BiasO = T.match_buffer(bias_o, (nO,), "float32")
        Y0 = T.match_buffer(y0, (nB, nO), "float32")
        Z = T.match_buffer(zo, (nT, nB, nH), "float32")
        V = T.match_buffer(vo, (nT, nB, nH), "float32")
        A = T.match_buffer(ao, (nT, nB, nH), "float32")
        FV = T.match_buffer(fv, (nB, nH), "float32")
        FA = T.match_buffer(fa, (nB, nH), "float32")
        FZ = T.match_buffer(fz, (nB, nH), "float32")
        FR = T.match_buffer(fr, (nB, nH), "float32")
        Y = T.match_buffer(yo, (nT, nB, nO), "float32")
        FY = T.match_buffer(fy, (nB, nO), "float32")
        ev_in = T.alloc_buffer((nI,), "int32")
        ev_sp = T.alloc_buffer((nH,), "int32")
        n_in = T.alloc_buffer((1,), "int32")
        n_sp = T.alloc_buffer((1,), "int32")
        cur = T.alloc_buffer((nH,), "float32")
        c = T.alloc_buffer((BLOCK,), "float32")
        q = T.alloc_buffer((BLOCK,), "float32")
        acc = T.alloc_buffer((BLOCK,), "float32")
        for b in range(nB):
            gather(Z0, (b,), nH, skip, ev_sp, n_sp)
            for t in range(nT):
                step(neuron)
                li_readout(nO, Events(n_sp[0], lambda e, o: neuron.spike_of(FZ, b, ev_sp[e]) * WoT[ev_sp[e], o]))

    return alif_li
