"""ai.lsnn::ALIF for NVIDIA GPUs: one persistent kernel launch per call.

Each thread block runs one sequence of the batch through all T steps; each
thread owns ``ceil(H / threads)`` neurons and keeps their ``v``, ``a`` and
refractory count in registers for the whole sequence. The previous step's
spikes live in shared memory, so every thread sees every spike after one
barrier. Both products are event-driven: a zero input or a silent neuron is
skipped by a branch that all threads of the block take alike (no divergence),
and the nonzero ones read rows of ``W^T`` and ``R^T`` coalesced across threads.
As on the CPU (:mod:`lsnn.targets.cpu.floatops`): NaN and Inf are events, zeros
are skipped only when the weights are known finite, a NaN membrane never spikes
and ``max(r - 1, 0)`` keeps a NaN (CUDA's ``fmaxf`` would drop it).

Small layers (``R^T`` fits in shared memory: ``H*H*4`` bytes within the
architecture's opt-in limit) copy ``R^T`` into shared memory once per launch;
larger ones read it from global memory (the *general path*, served from L2).
Shapes: ``I`` and ``H`` are fixed when the kernel is built (the weights are
constants); ``T`` and ``B`` stay symbolic.
"""
from __future__ import annotations

from ..base import TargetError
from ..cpu.floatops import at_least, nonzero
from ..tvmscript import T

MAX_THREADS = 1024


def threads_for(n: int) -> int:
    return min(MAX_THREADS, max(32, (n + 31) // 32 * 32))


def alif_kernel(*, thr: float, n_refractory: int, dims: dict, finite_weights: bool, events: bool,
                outputs: frozenset, shared_bytes: int):
    """``dims``: ``{"I": int, "H": int}``; ``shared_bytes``: the architecture's shared-memory
    limit per block, which decides between the persistent and the general path. ``outputs``:
    the node's outputs the graph reads; ``V``, ``A`` and the final states are stored only then."""
    if not dims or not isinstance(dims.get("H"), int) or not isinstance(dims.get("I"), int):
        raise TargetError("the CUDA ALIF kernel needs the layer's sizes (constant weights)")
    nI, nH = dims["I"], dims["H"]
    NT = threads_for(nH)
    J = (nH + NT - 1) // NT
    in_shared = nH * nH * 4 + nH * 4 <= shared_bytes
    thr_c, n_ref_c, skip = float(thr), float(n_refractory), bool(events) and bool(finite_weights)
    store_v, store_a = "V" in outputs, "A" in outputs
    store_fv, store_fa, store_fz, store_fr = (n in outputs for n in ("final_v", "final_a", "final_z", "final_r"))

    @T.prim_func(private=True)
    def alif(x: T.handle, wt: T.handle, rt: T.handle, beta: T.handle, alpha: T.handle, rho: T.handle,
             v0: T.handle, a0: T.handle, z0: T.handle, r0: T.handle,
             zo: T.handle, vo: T.handle, ao: T.handle, fv: T.handle, fa: T.handle, fz: T.handle, fr: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        nT = T.int64()
        nB = T.int64()
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
        for b in T.thread_binding(nB, thread="blockIdx.x"):
            for tx in T.thread_binding(NT, thread="threadIdx.x"):
                zs = T.alloc_buffer((nH,), "float32", scope="shared.dyn")
                Rs = T.alloc_buffer((nH * nH if in_shared else 1,), "float32", scope="shared.dyn")
                v = T.alloc_buffer((J,), "float32", scope="local")
                a = T.alloc_buffer((J,), "float32", scope="local")
                r = T.alloc_buffer((J,), "float32", scope="local")
                zn = T.alloc_buffer((J,), "float32", scope="local")
                if in_shared:
                    for q in range((nH * nH + NT - 1) // NT):
                        if q * NT + tx < nH * nH:
                            Rs[q * NT + tx] = RT[(q * NT + tx) // nH, (q * NT + tx) % nH]
                for j in range(J):
                    if j * NT + tx < nH:
                        v[j] = V0[b, j * NT + tx]
                        a[j] = A0[b, j * NT + tx]
                        r[j] = R0[b, j * NT + tx]
                        zs[j * NT + tx] = Z0[b, j * NT + tx]
                T.tvm_storage_sync("shared")
                for t in range(nT):
                    for j in range(J):
                        if j * NT + tx < nH:
                            h = j * NT + tx
                            cur = T.alloc_buffer((1,), "float32", scope="local")
                            rec = T.alloc_buffer((1,), "float32", scope="local")
                            zk = T.alloc_buffer((1,), "float32", scope="local")
                            cur[0] = T.float32(0)
                            rec[0] = T.float32(0)
                            for i in range(nI):
                                if not skip or nonzero(X[t, b, i]):
                                    cur[0] = cur[0] + X[t, b, i] * WT[i, h]
                            for k in range(nH):
                                zk[0] = zs[k]  # to a register: TVM's sync planner rejects shared loads in conditions
                                if not skip or nonzero(zk[0]):
                                    if in_shared:
                                        rec[0] = rec[0] + zk[0] * Rs[k * nH + h]
                                    else:
                                        rec[0] = rec[0] + zk[0] * RT[k, h]
                            z_old = zs[h]
                            a_new = Rho[h] * a[j] + (T.float32(1) - Rho[h]) * z_old
                            A_h = T.float32(thr_c) + Beta[h] * a_new
                            v_new = Alpha[h] * v[j] + (T.float32(1) - Alpha[h]) * (cur[0] + rec[0]) - A_h * z_old
                            s = T.if_then_else(v_new > A_h and r[j] == T.float32(0), T.float32(1), T.float32(0))
                            r[j] = T.if_then_else(s > T.float32(0), T.float32(n_ref_c),
                                                  at_least(r[j] - T.float32(1), T.float32(0)))
                            a[j] = a_new
                            v[j] = v_new
                            zn[j] = s
                            Z[t, b, h] = s
                            if store_v:
                                V[t, b, h] = v_new
                            if store_a:
                                A[t, b, h] = A_h
                    T.tvm_storage_sync("shared")  # every thread has read the previous spikes
                    for j in range(J):
                        if j * NT + tx < nH:
                            zs[j * NT + tx] = zn[j]
                    T.tvm_storage_sync("shared")  # the new spikes are visible to all
                for j in range(J):
                    if j * NT + tx < nH:
                        if store_fv:
                            FV[b, j * NT + tx] = v[j]
                        if store_fa:
                            FA[b, j * NT + tx] = a[j]
                        if store_fz:
                            FZ[b, j * NT + tx] = zs[j * NT + tx]
                        if store_fr:
                            FR[b, j * NT + tx] = r[j]

    return alif


def shared_bytes_used(H: int, shared_bytes: int) -> int:
    """Shared memory the kernel takes for a layer of H neurons (R^T only when it fits)."""
    return H * H * 4 + H * 4 if H * H * 4 + H * 4 <= shared_bytes else H * 4 + 4
