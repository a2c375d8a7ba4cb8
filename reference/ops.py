"""The ``ai.lsnn`` operators as PyTorch custom ops: ``torch.ops.lsnn.alif`` and ``torch.ops.lsnn.li``.

Each op is the functional reference (:mod:`.functional`) behind ``torch.library``,
so that ``torch.export`` (and with it ``torch.onnx.export``) keeps an ALIF or LI
layer as one node instead of unrolling its time loop; the exporter's
translation of these nodes to ``ai.lsnn::ALIF`` / ``ai.lsnn::LI`` lives in
:mod:`lsnn.compiler.onnx.translation`. Inputs and outputs are the spec's, in
its order (``compiler/onnx/schema.py``): optional state inputs may be None and
every output, the final state included, is returned.

Gradients: the layers (:mod:`.layers`) call the functional reference directly
when training, so autograd sees every step. The ops' own backward recomputes
the forward with the pseudo-derivative (:func:`.surrogate.spike`) and
back-propagates through it, for code that calls the ops directly.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .functional import alif as alif_reference
from .functional import li as li_reference
from .surrogate import spike

_ALIF_STATE = ("initial_v", "initial_a", "initial_z", "initial_r")


@torch.library.custom_op("lsnn::alif", mutates_args=())
def alif(X: Tensor, W: Tensor, R: Tensor, beta: Tensor, alpha: Tensor, rho: Tensor,
         initial_v: Tensor | None = None, initial_a: Tensor | None = None,
         initial_z: Tensor | None = None, initial_r: Tensor | None = None,
         thr: float = 0.01, n_refractory: int = 0
         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``ai.lsnn::ALIF``: ``(Z, V, A, final_v, final_a, final_z, final_r)``."""
    Z, V, A, final = alif_reference(X, W, R, beta, alpha, rho, thr, n_refractory,
                                    state=_state(initial_v, initial_a, initial_z, initial_r))
    return Z, V, A, *(s.clone() for s in final)  # outputs never alias the inputs (T = 0)


@alif.register_fake
def _alif_shapes(X, W, R, beta, alpha, rho, initial_v=None, initial_a=None, initial_z=None,
                 initial_r=None, thr=0.01, n_refractory=0):
    T, B, _ = X.shape
    H = W.shape[0]
    return (*(X.new_empty(T, B, H) for _ in range(3)), *(X.new_empty(B, H) for _ in range(4)))


def _state(*slots):
    """The ALIF state tuple, or None where the op's state inputs are all omitted; the spec has them
    optional one by one, and an omitted slot starts at zero."""
    if all(s is None for s in slots):
        return None
    given = next(s for s in slots if s is not None)
    return tuple(torch.zeros_like(given) if s is None else s for s in slots)


def _alif_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:10])
    ctx.attrs = inputs[10:]


def _alif_backward(ctx, *grads):
    inputs = ctx.saved_tensors
    with torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_(t.dtype.is_floating_point)
                  for t in inputs]
        X, W, R, beta, alpha, rho, *state = leaves
        thr, n_refractory = ctx.attrs
        Z, V, A, final = alif_reference(X, W, R, beta, alpha, rho, thr, n_refractory,
                                        state=_state(*state), spike_fn=spike)
        return (*_grads((Z, V, A, *final), grads, leaves), None, None)


@torch.library.custom_op("lsnn::li", mutates_args=())
def li(X: Tensor, W: Tensor, alpha: Tensor, bias: Tensor | None = None,
       initial_y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``ai.lsnn::LI``: ``(Y, final_y)``."""
    Y, final_y = li_reference(X, W, alpha, bias, initial_y)
    return Y, final_y.clone()


@li.register_fake
def _li_shapes(X, W, alpha, bias=None, initial_y=None):
    T, B, _ = X.shape
    O = W.shape[0]
    return X.new_empty(T, B, O), X.new_empty(B, O)


def _li_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _li_backward(ctx, grad_Y, grad_final):
    with torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_() for t in ctx.saved_tensors]
        Y, final_y = li_reference(*leaves)
        return tuple(_grads((Y, final_y), (grad_Y, grad_final), leaves))


def _grads(outputs, grads, leaves) -> list:
    """d(outputs)/d(leaves) weighted by ``grads``; None for omitted inputs and unused outputs."""
    pairs = [(o, g) for o, g in zip(outputs, grads) if g is not None and o.requires_grad]
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    if not pairs or not wanted:
        return [None] * len(leaves)
    got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True))
    return [next(got) if t is not None and t.requires_grad else None for t in leaves]


alif.register_autograd(_alif_backward, setup_context=_alif_setup)
li.register_autograd(_li_backward, setup_context=_li_setup)
