"""ai.lsnn::ALIF for CPUs: one TIR kernel with the time loop inside.

Per sequence, the state (v, a, z, r) stays in four H-long buffers that live in
cache for the whole run. Both products are event-driven: an input or a
recurrent spike that is zero contributes nothing, so only the weight rows of
nonzero inputs (``W^T[i, :]``) and of neurons that spiked (``R^T[k, :]``) are
accumulated, each as a contiguous, vectorisable row. Skipping exact zeros is
exact for real-valued inputs too, as long as the weights are finite
(``0 * inf`` is NaN): the importer says so (``finite_weights``, constants
checked at compile time); weights only known at run time get the dense
kernel. NaN and Inf inputs count as events (:func:`.floatops.nonzero`), and a
NaN membrane never spikes (``H(x)`` is 1 only where ``x > 0``). Shapes are
symbolic: one kernel serves every T, B, I and H.
"""
from __future__ import annotations

from tvm.script import tirx as T

from .floatops import at_least, nonzero


def alif_kernel(*, thr: float, n_refractory: int, dims: dict, finite_weights: bool, events: bool):
    """The kernel for one node's attributes (``dims``, the static sizes, unused: shapes stay
    symbolic). ``events=False`` gives the dense kernel (every weight row visited every step),
    kept to measure what events save; so does ``finite_weights=False``, for exactness."""
    thr_c = float(thr)
    n_ref_c = float(n_refractory)
    skip = bool(events) and bool(finite_weights)

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
        v = T.alloc_buffer((nH,), "float32")
        a = T.alloc_buffer((nH,), "float32")
        z = T.alloc_buffer((nH,), "float32")
        r = T.alloc_buffer((nH,), "float32")
        cur = T.alloc_buffer((nH,), "float32")
        rec = T.alloc_buffer((nH,), "float32")
        for b in range(nB):
            for h in range(nH):
                v[h] = V0[b, h]
                a[h] = A0[b, h]
                z[h] = Z0[b, h]
                r[h] = R0[b, h]
            for t in range(nT):
                for h in range(nH):
                    cur[h] = T.float32(0)
                    rec[h] = T.float32(0)
                for i in range(nI):  # input projection, event-driven
                    if not skip or nonzero(X[t, b, i]):
                        for h in range(nH):
                            cur[h] = cur[h] + X[t, b, i] * WT[i, h]
                for k in range(nH):  # recurrent input from the previous step's spikes
                    if not skip or nonzero(z[k]):
                        for h in range(nH):
                            rec[h] = rec[h] + z[k] * RT[k, h]
                for h in range(nH):
                    a_new = Rho[h] * a[h] + (T.float32(1) - Rho[h]) * z[h]
                    A_h = T.float32(thr_c) + Beta[h] * a_new
                    v_new = Alpha[h] * v[h] + (T.float32(1) - Alpha[h]) * (cur[h] + rec[h]) - A_h * z[h]
                    # H(v - A) * (r == 0): both comparisons are false for NaN
                    s = T.if_then_else(v_new > A_h and r[h] == T.float32(0), T.float32(1), T.float32(0))
                    r[h] = T.if_then_else(s > T.float32(0), T.float32(n_ref_c), at_least(r[h] - T.float32(1), T.float32(0)))
                    a[h] = a_new
                    v[h] = v_new
                    z[h] = s
                    Z[t, b, h] = s
                    V[t, b, h] = v_new
                    A[t, b, h] = A_h
            for h in range(nH):
                FV[b, h] = v[h]
                FA[b, h] = a[h]
                FZ[b, h] = z[h]
                FR[b, h] = r[h]

    return alif
