"""ai.lsnn::ALIF for CPUs: one TIR kernel with the time loop inside.

Per sequence, the state (v, a, z, r) stays in H-long buffers that live in
cache for the whole run (on the stack when the sizes are known,
:func:`.tirtools.size`). Each step first lists its events once
(:func:`.tirtools.event_list`): the indices of the nonzero inputs and of the
neurons that spiked. Both products then visit those rows only (``W^T[i, :]``,
``R^T[k, :]``), each a contiguous row accumulated as vector code, and the
neuron update runs as vector code with selects, no branches
(:func:`.tirtools.over`). Skipping exact zeros is exact for real-valued inputs
too, as long as the weights are finite (``0 * inf`` is NaN): the importer says
so (``finite_weights``, constants checked at compile time); weights only known
at run time get the dense kernel. NaN and Inf inputs count as events
(:func:`.floatops.nonzero`), and a NaN membrane never spikes (``H(x)`` is 1
only where ``x > 0``).

``outputs`` names the node's outputs the graph reads: ``Z`` is always
written, ``V``, ``A`` and the final states only when read (the kernel keeps
its parameters; an unread output's buffer is left as it is). ``parallel``
hands the batch's sequences to the runtime's threads (:func:`.worklist.each`).
Shapes are symbolic: one kernel serves every T, B, I and H.
"""
from __future__ import annotations

from ..tvmscript import T
from .floatops import at_least
from .li import leak
from .tirtools import event_list, over, prefetch, size
from .worklist import each


def alif_kernel(*, thr: float, n_refractory: int, dims: dict, finite_weights: bool, events: bool,
                outputs: frozenset, lanes: int = 1, parallel: bool = False, ahead: int = 0,
                readout: frozenset | None = None):
    """The kernel for one node's attributes (``dims``, the static sizes: constant sizes put the
    per-sequence buffers on the stack). ``events=False`` gives the dense kernel (every weight row
    visited every step), kept to measure what events save; so does ``finite_weights=False``,
    for exactness. ``lanes``: the vector width of the row loops (1: scalar, for TVM's C code
    generator); ``parallel``: the batch loop runs on the runtime's thread pool.

    ``readout``: the outputs read of an LI node that reads this layer's spikes (``Y``, and
    ``final_y`` when read), computed in the same kernel (``ALIF+LI``): each step's spike list,
    made once, serves the readout and the next step's recurrent input, and ``Z`` is stored only
    when something else reads it (``"Z" in outputs``)."""
    thr_c, n_ref_c = float(thr), float(n_refractory)
    skip = bool(events) and bool(finite_weights)
    store_v, store_a = "V" in outputs, "A" in outputs
    store_z = readout is None or "Z" in outputs
    final = {name: name in outputs for name in ("final_v", "final_a", "final_z", "final_r")}
    store_fy = readout is not None and "final_y" in readout

    @T.macro(hygienic=False)
    def load_state(h):
        v[h] = V0[b, h]
        a[h] = A0[b, h]
        z[h] = Z0[b, h]
        r[h] = R0[b, h]

    @T.macro(hygienic=False)
    def clear_sums(h):
        cur[h] = T.float32(0)
        rec[h] = T.float32(0)

    @T.macro(hygienic=False)
    def add_input_row(h):
        cur[h] = cur[h] + xi * WT[i, h]

    @T.macro(hygienic=False)
    def add_recurrent_row(h):
        rec[h] = rec[h] + zk * RT[k, h]

    @T.macro(hygienic=False)
    def update(h, thr=T.float32(thr_c), n_ref=T.float32(n_ref_c), store_z=store_z, store_v=store_v,
               store_a=store_a):
        # Each state is overwritten as soon as nothing reads its old value: a variable bound
        # inside a vector loop would stay scalar (TVM 0.27's VectorizeLoop keeps a Bind's type).
        a[h] = Rho[h] * a[h] + (T.float32(1) - Rho[h]) * z[h]
        A_h = T.meta_var(thr + Beta[h] * a[h])
        v[h] = Alpha[h] * v[h] + (T.float32(1) - Alpha[h]) * (cur[h] + rec[h]) - A_h * z[h]
        # H(v - A) * (r == 0): both comparisons are false for NaN
        z[h] = T.Select(v[h] > A_h and r[h] == T.float32(0), T.float32(1), T.float32(0))
        r[h] = T.Select(z[h] > T.float32(0), n_ref, at_least(r[h] - T.float32(1), T.float32(0)))
        if store_z:
            Z[t, b, h] = z[h]
        if store_v:
            V[t, b, h] = v[h]
        if store_a:
            A[t, b, h] = A_h

    @T.macro(hygienic=False)
    def store_state(h, final=final):
        if final["final_v"]:
            FV[b, h] = v[h]
        if final["final_a"]:
            FA[b, h] = a[h]
        if final["final_z"]:
            FZ[b, h] = z[h]
        if final["final_r"]:
            FR[b, h] = r[h]

    # the LI readout of the fused kernel, with lsnn.targets.cpu.li's update (the same sums in the
    # same order: bit for bit)
    @T.macro(hygienic=False)
    def load_y(o):
        y[o] = Y0[b, o]

    @T.macro(hygienic=False)
    def clear_y(o):
        acc[o] = T.float32(0)

    @T.macro(hygienic=False)
    def add_readout_row(o):
        acc[o] = acc[o] + zk * WoT[k, o]

    @T.macro(hygienic=False)
    def update_y(o):
        leak(y, o, acc, AlphaO, BiasO)
        Y[t, b, o] = y[o]

    @T.macro(hygienic=False)
    def store_y(o, store_fy=store_fy):
        if store_fy:
            FY[b, o] = y[o]

    @T.macro
    def sequence(b, fused, X, WT, RT, Beta, Alpha, Rho, V0, A0, Z0, R0, Z, V, A, FV, FA, FZ, FR,
                 WoT, AlphaO, BiasO, Y0, Y, FY):
        """Sequence ``b`` of the batch, with its state in ``H``-long buffers (``fused``: and the
        readout's in ``O``-long ones); the readout's buffers are None when not ``fused``."""
        nT, _, nI = T.meta_var(X.shape)
        nH = T.meta_var(WT.shape[1])
        nO = T.meta_var(WoT.shape[1] if fused else 1)
        v = T.alloc_buffer((nH,), "float32")
        a = T.alloc_buffer((nH,), "float32")
        z = T.alloc_buffer((nH,), "float32")
        r = T.alloc_buffer((nH,), "float32")
        cur = T.alloc_buffer((nH,), "float32")
        rec = T.alloc_buffer((nH,), "float32")
        inputs = T.alloc_buffer((nI,), "int32")
        spikes = T.alloc_buffer((nH,), "int32")
        n_in = T.alloc_buffer((1,), "int32")
        n_sp = T.alloc_buffer((1,), "int32")
        y = T.alloc_buffer((nO,), "float32")
        acc = T.alloc_buffer((nO,), "float32")
        over(nH, lanes, load_state)
        if fused:
            over(nO, lanes, load_y)
        event_list(spikes, n_sp, nH, lambda q: z[q], skip, lanes)
        for t in range(nT):
            if ahead > 0:  # rows of later steps, far apart in memory when B is large
                if t + ahead < nT:
                    prefetch(lambda q: X[t + ahead, b, q], nI, 0)
                    if store_z:
                        prefetch(lambda q: Z[t + ahead, b, q], nH, 1)
            event_list(inputs, n_in, nI, lambda q: X[t, b, q], skip, lanes)
            over(nH, lanes, clear_sums)
            for e in range(n_in[0]):  # input projection over the step's nonzero inputs
                i = T.Cast("int64", inputs[e])
                xi = X[t, b, i]
                over(nH, lanes, add_input_row)
            for e in range(n_sp[0]):  # recurrent input from the previous step's spikes
                k = T.Cast("int64", spikes[e])
                zk = z[k]
                over(nH, lanes, add_recurrent_row)
            over(nH, lanes, update)
            event_list(spikes, n_sp, nH, lambda q: z[q], skip, lanes)  # this step's spikes
            if fused:
                over(nO, lanes, clear_y)
                for e in range(n_sp[0]):
                    k = T.Cast("int64", spikes[e])
                    zk = z[k]
                    over(nO, lanes, add_readout_row)
                over(nO, lanes, update_y)
        over(nH, lanes, store_state)
        if fused:
            over(nO, lanes, store_y)

    @T.prim_func(private=True)
    def alif(x: T.handle, wt: T.handle, rt: T.handle, beta: T.handle, alpha: T.handle, rho: T.handle,
             v0: T.handle, a0: T.handle, z0: T.handle, r0: T.handle,
             zo: T.handle, vo: T.handle, ao: T.handle, fv: T.handle, fa: T.handle, fz: T.handle, fr: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        nI = T.meta_var(size(dims, "I"))
        nH = T.meta_var(size(dims, "H"))
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
        each(nB, parallel, lambda b: sequence(b, False, X, WT, RT, Beta, Alpha, Rho, V0, A0, Z0, R0, Z, V, A,
                                              FV, FA, FZ, FR, None, None, None, None, None, None))

    @T.prim_func(private=True)
    def alif_li(x: T.handle, wt: T.handle, rt: T.handle, beta: T.handle, alpha: T.handle, rho: T.handle,
                v0: T.handle, a0: T.handle, z0: T.handle, r0: T.handle,
                wot: T.handle, alpha_o: T.handle, bias_o: T.handle, y0: T.handle,
                zo: T.handle, vo: T.handle, ao: T.handle, fv: T.handle, fa: T.handle, fz: T.handle, fr: T.handle,
                yo: T.handle, fy: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        nI = T.meta_var(size(dims, "I"))
        nH = T.meta_var(size(dims, "H"))
        nO = T.meta_var(size(dims, "O"))
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
        each(nB, parallel, lambda b: sequence(b, True, X, WT, RT, Beta, Alpha, Rho, V0, A0, Z0, R0, Z, V, A,
                                              FV, FA, FZ, FR, WoT, AlphaO, BiasO, Y0, Y, FY))

    return alif if readout is None else alif_li
