"""The fused ALIF and LI layers for training: forward and backward (BPTT) each one C++ call over
the sequence.

The eager reference (:func:`.functional.alif` with :func:`.surrogate.spike`) runs about a dozen
tiny PyTorch operations per step and as many again backwards, so an 840-step sMNIST batch spends
its time dispatching operations, not computing. :class:`FusedALIF` is a ``torch.autograd.Function``
whose forward and backward are each one call into ``csrc/alif_bptt.cpp`` (the equations are in
that file's header; they are the spec's, ``shared/spec/ops.md``, and the pseudo-derivative
``dz/dv = 0.3 * max(0, 1 - |(v - A) / A|) / A``, ``dz/dA = -dz/dv``, gated by the refractory mask):

* forward: the recurrent product ``z R^T`` is summed over the spikes of ``z`` only, and so is the
  input product ``X W^T`` when ``X`` holds sparse 0/1 spikes (else it is one matmul); every
  elementwise operation is the reference's, in its order, so the spikes are the reference's;
* backward: time runs backwards in one loop; the dense work per step is ``gI R`` (the gradient
  reaching the previous spikes), and only where that step's pseudo-derivative is not zero (the
  spikes reach the loss through it alone: about a fifth of the neurons in sMNIST training), as dot
  products (one matmul where more are needed); the weight gradients ``gW``, ``gR`` accumulate over
  the nonzero inputs and spikes only, after the loop;
* the firing-rate regulariser's mean ``Z.mean(dim=(0, 1))`` is an output of the call
  (:func:`spike_rates`, which :func:`.regularizers.firing_rates` takes): its gradient, the same at
  every step and row, is added in the backward loop rather than expanded to ``Z``'s shape and
  summed with the readout's gradient (two passes over ``[T, B, H]``).

:class:`FusedLI` does the same for the linear readout: one matmul for the drive over the whole
sequence (the reference's own), the leaky scan, and in its backward a scan back in time and two
matmuls (with 10 outputs a spike's share of the product is too small for events to pay).

Why a C++/ATen extension and not the suite's TVM kernels: training needs the backward pass, which
the TVM kernels do not have (they implement the forward operator for inference), and its state is
torch's (autograd, optimisers, ``torch.distributed``); an ATen extension takes and returns torch
tensors without copies, uses torch's own BLAS for the dense products, and is built by
``torch.utils.cpp_extension`` with the compiler that builds everything else here. It is built
once by ``setup.sh`` (:func:`build`) into the virtual environment (``<venv>/var/lsnn/torch_extensions``;
outside one, torch's default cache) and otherwise on first use.

Where it cannot be built (no compiler), :func:`alif` and :func:`li` warn once
(:class:`FusedKernelWarning`) and run the eager reference; so they do for tensors not on the CPU.
``ALIF(..., fused=False)`` and ``LI(..., fused=False)`` ask for the eager reference outright.

The forward values equal the eager reference's bit for bit wherever torch's matmul sums a product
in the order of its inner index (MKL here does for batches above 1 and up to a few hundred
neurons; the tests check it); otherwise they differ by the rounding of that order.
"""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from .errors import ConfigError
from .functional import ALIFOutput, ALIFState, LIOutput, zero_state
from .functional import alif as alif_reference
from .functional import li as li_reference
from .surrogate import spike

SOURCE = Path(__file__).with_name("csrc") / "alif_bptt.cpp"
NAME = "lsnn_alif_bptt"
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off"]  # no FMA: the reference rounds each product

_kernel = None  # the loaded extension, False once its build failed

# The backward pass sums the gradient reaching a step's spikes, gI R, as one matmul where more than
# this fraction of them reach the loss (a nonzero pseudo-derivative), else as dot products of those
# only: the two cost the same at about 40% in sMNIST training (a fifth is typical).
DENSE_SPIKE_GRAD = 0.4


class FusedKernelWarning(UserWarning):
    """The fused ALIF kernel could not be built; training runs the (slower) eager reference."""


def build_directory() -> Path | None:
    """Where the extension is built: inside the virtual environment when there is one, else
    torch's default cache (None)."""
    if sys.prefix == sys.base_prefix:
        return None
    return Path(sys.prefix) / "var" / "lsnn" / "torch_extensions"


def build(verbose: bool = False):
    """The compiled extension, building it if needed; None (with one warning) where it cannot be."""
    global _kernel
    if _kernel is None:
        from torch.utils import cpp_extension

        where = build_directory()
        if where is not None:
            where.mkdir(parents=True, exist_ok=True)
        try:
            _kernel = cpp_extension.load(NAME, [str(SOURCE)], extra_cflags=CFLAGS, verbose=verbose,
                                         build_directory=None if where is None else str(where))
        except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as e:
            _kernel = False
            warnings.warn(f"the fused ALIF kernel ({SOURCE}) could not be built, so training runs the "
                          f"eager reference (several times slower): {str(e).strip().splitlines()[-1:]}",
                          FusedKernelWarning, stacklevel=2)
    return _kernel or None


class FusedALIF(torch.autograd.Function):
    """``(Z, V, A, final_v, final_a, final_z, final_r, rates)`` of ``ai.lsnn::ALIF`` with BPTT
    through the pseudo-derivative; gradients reach ``X``, ``W``, ``R`` and the initial ``v, a, z``
    (``beta``, ``alpha``, ``rho`` are constants: :func:`alif` refuses them with gradients).
    ``rates = Z.mean(dim=(0, 1))`` (:func:`spike_rates`): its gradient ``g`` is ``g / (T B)`` at every
    step and row of ``Z``, which the kernel adds as it goes instead of reading ``T B`` copies."""

    @staticmethod
    def forward(ctx, X, W, R, beta, alpha, rho, v0, a0, z0, r0, thr, n_refractory):
        k = build()
        event = k.event_driven_inputs(X)
        Z, V, A, v, a, z, r, M = k.forward(X, W, R, beta, alpha, rho, v0, a0, z0, r0, thr, n_refractory, event)
        ctx.save_for_backward(X, W, R, beta, alpha, rho, z0, Z, V, A, M)
        ctx.event = event
        ctx.mark_non_differentiable(r)
        ctx.set_materialize_grads(False)
        return Z, V, A, v, a, z, r, Z.mean(dim=(0, 1))

    @staticmethod
    def backward(ctx, gZ, gV, gA, gv, ga, gz, _gr, g_rates):
        X, W, R, beta, alpha, rho, z0, Z, V, A, M = ctx.saved_tensors
        need = ctx.needs_input_grad
        c = lambda g: None if g is None else g.contiguous()
        gc = None if g_rates is None else g_rates / (Z.shape[0] * Z.shape[1])  # Z.mean's own backward
        gX, gW, gR, gv0, ga0, gz0 = build().backward(
            c(gZ), c(gV), c(gA), c(gc), c(gv), c(ga), c(gz), X, W, R, beta, alpha, rho, z0, Z, V, A, M,
            ctx.event, DENSE_SPIKE_GRAD, need[0], need[1], need[2], any(need[6:9]))
        return gX, gW, gR, None, None, None, gv0, ga0, gz0, None, None, None


# The spikes Z of each fused call still alive -> (Z's version then, its differentiable mean rates)
_RATES = WeakTensorKeyDictionary()


def spike_rates(Z: torch.Tensor) -> torch.Tensor | None:
    """``Z.mean(dim=(0, 1))`` as the fused ALIF call that made ``Z`` computed it, whose backward
    costs nothing per step; None where ``Z`` is not (or no longer: changed in place) such spikes."""
    made = _RATES.get(Z)
    return made[1] if made is not None and made[0] == Z._version else None


def eager_alif(X, W, R, beta, alpha, rho, thr: float = 0.01, n_refractory: int = 0,
               state: ALIFState | tuple | None = None) -> ALIFOutput:
    """The eager reference with the pseudo-derivative: autograd through every step of
    :func:`.functional.alif`."""
    return alif_reference(X, W, R, beta, alpha, rho, thr, n_refractory, state=state, spike_fn=spike)


def runs_fused(X) -> bool:
    """Whether :func:`alif` can take the fused kernel for ``X``: a CPU tensor, with the kernel built."""
    return isinstance(X, torch.Tensor) and X.device.type == "cpu" and X.dim() == 3 and X.shape[0] > 0 \
        and build() is not None


def alif(X, W, R, beta, alpha, rho, thr: float = 0.01, n_refractory: int = 0,
         state: ALIFState | tuple | None = None) -> ALIFOutput:
    """:func:`.functional.alif` with the pseudo-derivative, fused where it can be (:func:`runs_fused`),
    else the eager reference itself. Same arguments, same outputs, same errors."""
    if not runs_fused(X):
        return eager_alif(X, W, R, beta, alpha, rho, thr, n_refractory, state)
    # the reference's own checks of shapes, dtypes and attributes, on zero steps of the input
    alif_reference(X[:0], W, R, beta, alpha, rho, thr, n_refractory, state=state)
    for t, name in ((beta, "beta"), (alpha, "alpha"), (rho, "rho")):
        if t.requires_grad:
            raise ConfigError(f"ALIF: the fused kernel treats '{name}' as a constant but it requires a "
                              f"gradient; train it with ALIF(..., fused=False)")
    state = zero_state(X.shape[1], W.shape[0], X) if state is None else state
    args = [t.contiguous() for t in (X, W, R, beta, alpha, rho, *state)]
    Z, V, A, v, a, z, r, rates = FusedALIF.apply(*args, float(thr), int(n_refractory))
    _RATES[Z] = (Z._version, rates)
    return ALIFOutput(Z, V, A, ALIFState(v, a, z, r))


class FusedLI(torch.autograd.Function):
    """``(Y, final_y)`` of ``ai.lsnn::LI``, gradients to ``X``, ``W``, ``bias`` and ``y0`` (``alpha``
    is a constant). The bias slot is a tensor; ``has_bias`` says whether it is the layer's."""

    @staticmethod
    def forward(ctx, X, W, alpha, bias, y0, has_bias):
        Y, y = build().li_forward(X, W, alpha, bias if has_bias else None, y0)
        ctx.save_for_backward(X, W, alpha)
        ctx.set_materialize_grads(False)
        return Y, y

    @staticmethod
    def backward(ctx, gY, gy):
        X, W, alpha = ctx.saved_tensors
        need = ctx.needs_input_grad
        c = lambda g: None if g is None else g.contiguous()
        gX, gW, gb, gy0 = build().li_backward(c(gY), c(gy), X, W, alpha, need[0], need[1], need[3], need[4])
        return gX, gW, None, gb, gy0, None


def li(X, W, alpha, bias=None, y0=None) -> LIOutput:
    """:func:`.functional.li`, fused where it can be (:func:`runs_fused`), else the reference itself."""
    if not runs_fused(X):
        return li_reference(X, W, alpha, bias, y0)
    li_reference(X[:0], W, alpha, bias, y0)  # the reference's own checks, on zero steps of the input
    if alpha.requires_grad:
        raise ConfigError("LI: the fused kernel treats 'alpha' as a constant but it requires a gradient; "
                          "train it with LI(..., fused=False)")
    O = W.shape[0]
    y0 = X.new_zeros(X.shape[1], O) if y0 is None else y0
    b = X.new_zeros(O) if bias is None else bias
    Y, y = FusedLI.apply(X.contiguous(), W.contiguous(), alpha.contiguous(), b.contiguous(), y0.contiguous(),
                         bias is not None)
    return LIOutput(Y, y)
