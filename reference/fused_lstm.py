"""The LSTM baseline's training step: forward and backward through time as one autograd node.

``torch.nn.LSTM`` on the CPU trains through oneDNN's RNN primitive, whose backward takes about
2.8 s of a 2.4–3 s sMNIST step (batch 64, 840 steps, 128 units, one thread); without oneDNN,
autograd records a dozen small operations per time step and replays them backwards (about 2 s).
:class:`FusedLSTM` keeps what the step needs and nothing else:

* forward: the input projection of all steps, ``X W_ih^T + b_ih + b_hh``, as one matrix product
  before the loop; per step one ``h W_hh^T`` and the cell (PyTorch's gate order ``i, f, g, o``)::

      i, f, o = sigmoid(.)    g = tanh(.)    c' = f c + i g    h' = o tanh(c')

* backward: time backwards in chunks of :data:`CHUNK` steps, whose gate gradients stay in cache:
  per chunk the activations' derivatives (``s (1 - s)``, ``1 - g^2`` and ``o (1 - tanh(c)^2)``)
  in one pass, per step the gate gradients and one ``dG W_hh`` (the gradient reaching the
  previous ``h``), then the chunk's weight gradients as one matrix product each
  (``dG^T [h_{t-1}]`` and ``dG^T X``), not one per step.

The parameters are ``nn.LSTM``'s own (``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
``bias_hh_l0``), so checkpoints do not change; the values equal ``nn.LSTM``'s within float32
rounding (the order of the sums differs), and so do the gradients (tests/test_fused_lstm.py).
:class:`~.modules.LSTMNet` trains through it unless built with ``fused=False``; inference and
export go through ``nn.LSTM`` (the ONNX ``LSTM`` node).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def flushed_denormals():
    """Subnormal floats read and written as zero on this thread while inside (restored after).

    Gradients that travel back through hundreds of steps shrink below float32's normal range,
    where every operation on them takes a microcode path tens of times slower: without this the
    sMNIST backward runs ``dG W_hh`` at 5 ms a step instead of 0.1 ms. Values that small (below
    1.2e-38) are zero to any gradient step."""
    was = bool(torch.tensor(1e-39) * 1.0 == 0)  # the thread's current mode, probed
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was)


def _cell(g: torch.Tensor, c_prev: torch.Tensor, c: torch.Tensor, tanh_c: torch.Tensor, h: torch.Tensor,
          H: int) -> None:
    """Activate the preactivations ``g [B, 4H]`` in place and write ``c``, ``tanh(c)`` and ``h``."""
    g[:, :2 * H].sigmoid_()
    g[:, 2 * H:3 * H].tanh_()
    g[:, 3 * H:].sigmoid_()
    torch.mul(g[:, H:2 * H], c_prev, out=c)
    c.addcmul_(g[:, :H], g[:, 2 * H:3 * H])
    torch.tanh(c, out=tanh_c)
    torch.mul(g[:, 3 * H:], tanh_c, out=h)


class FusedLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, X, w_ih, w_hh, b_ih, b_hh, h0, c0):
        T, B, _ = X.shape
        H = w_hh.shape[1]
        gates = torch.addmm(b_ih + b_hh, X.reshape(T * B, -1), w_ih.t()).view(T, B, 4 * H)
        hs = X.new_empty(T + 1, B, H)  # h_0 .. h_T
        cs = X.new_empty(T + 1, B, H)
        tanh_c = X.new_empty(T, B, H)
        hs[0], cs[0] = h0, c0
        w_hh_t = w_hh.t()
        for t in range(T):
            gates[t].addmm_(hs[t], w_hh_t)
            _cell(gates[t], cs[t], cs[t + 1], tanh_c[t], hs[t + 1], H)
        ctx.save_for_backward(X, w_ih, w_hh, gates, hs, cs, tanh_c)
        return hs[1:], hs[T].clone(), cs[T].clone()

    @staticmethod
    def backward(ctx, gY, gh, gc):
        X, w_ih, w_hh, gates, hs, cs, tanh_c = ctx.saved_tensors
        with flushed_denormals():
            return FusedLSTM._backward(ctx, gY, gh, gc, X, w_ih, w_hh, gates, hs, cs, tanh_c)

    @staticmethod
    def _backward(ctx, gY, gh, gc, X, w_ih, w_hh, gates, hs, cs, tanh_c):
        T, B, H = tanh_c.shape
        need = ctx.needs_input_grad
        g_ih = torch.zeros_like(w_ih) if need[1] else None
        g_hh = torch.zeros_like(w_hh) if need[2] else None
        gb = X.new_zeros(4 * H)
        gX = torch.empty_like(X) if need[0] else None
        dh = gh.clone() if gh is not None else X.new_zeros(B, H)
        dc = gc.clone() if gc is not None else X.new_zeros(B, H)
        k = min(CHUNK, T)
        dG, dact, o_dtanh = X.new_empty(k, B, 4 * H), X.new_empty(k, B, 4 * H), X.new_empty(k, B, H)
        for t1 in range(T, 0, -k):
            t0 = max(t1 - k, 0)
            n = t1 - t0
            _derivatives(gates[t0:t1], tanh_c[t0:t1], dact[:n], o_dtanh[:n], H)
            for t in range(t1 - 1, t0 - 1, -1):
                if gY is not None:
                    dh += gY[t]
                g, d = gates[t], dG[t - t0]
                dc.addcmul_(dh, o_dtanh[t - t0])
                torch.mul(dh, tanh_c[t], out=d[:, 3 * H:])
                torch.mul(dc, g[:, 2 * H:3 * H], out=d[:, :H])
                torch.mul(dc, cs[t], out=d[:, H:2 * H])
                torch.mul(dc, g[:, :H], out=d[:, 2 * H:3 * H])
                dc.mul_(g[:, H:2 * H])
                d.mul_(dact[t - t0])
                torch.mm(d, w_hh, out=dh)
            flat = dG[:n].view(n * B, 4 * H)  # the weight gradients of this chunk's steps
            if g_ih is not None:
                g_ih.addmm_(flat.t(), X[t0:t1].reshape(n * B, -1))
            if g_hh is not None:
                g_hh.addmm_(flat.t(), hs[t0:t1].reshape(n * B, H))
            gb += flat.sum(0)
            if gX is not None:
                torch.mm(flat, w_ih, out=gX[t0:t1].view(n * B, -1))
        return gX, g_ih, g_hh, gb, gb, dh, dc


#: steps whose gate gradients are held at once (then turned into weight gradients): small enough
#: to stay in cache, large enough for efficient matrix products
CHUNK = 32


def _derivatives(g: torch.Tensor, tanh_c: torch.Tensor, dact: torch.Tensor, o_dtanh: torch.Tensor, H: int):
    """Of activated gates ``g [n, B, 4H]``: ``d act / d preact`` into ``dact`` (``s (1 - s)`` for
    the sigmoids, ``1 - g^2`` for the tanh) and ``o (1 - tanh(c)^2)`` into ``o_dtanh``."""
    torch.mul(g, g, out=dact)
    torch.sub(g, dact, out=dact)
    gg = dact[..., 2 * H:3 * H]
    torch.mul(g[..., 2 * H:3 * H], g[..., 2 * H:3 * H], out=gg)
    gg.neg_().add_(1)
    torch.mul(tanh_c, tanh_c, out=o_dtanh)
    o_dtanh.neg_().add_(1).mul_(g[..., 3 * H:])


def lstm(lstm: torch.nn.LSTM, X: torch.Tensor, state: tuple | None = None):
    """``lstm(X, state)`` through :class:`FusedLSTM`: ``(H [T, B, H], (h [1, B, H], c [1, B, H]))``,
    as ``nn.LSTM`` returns them. ``lstm`` is one unidirectional layer with biases, sequence-first."""
    B, H = X.shape[1], lstm.hidden_size
    h0, c0 = (s.reshape(B, H) for s in state) if state is not None else (X.new_zeros(B, H),) * 2
    Y, h, c = FusedLSTM.apply(X, lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0, h0, c0)
    return Y, (h.unsqueeze(0), c.unsqueeze(0))

