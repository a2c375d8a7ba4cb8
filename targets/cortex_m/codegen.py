"""The one-step graph through TVM to C: kernels from TVM's C code generator, glue from here.

1. The step graph (:mod:`lsnn.compiler.stepgraph`, batch 1, one time step) is
   imported with the suite's importer and lowered by Relax: standard ops are
   legalised to TIR and fused, constants folded, and every kernel specialised
   to the static shapes of its call site.
2. Each PrimFunc gets pointer parameters (its buffers declared on them) and
   the plain C calling convention, and TVM's ``"c"`` target prints it:
   ``void lsnn_k_<name>(float*, ...)``, no packed API, no runtime. Scratch
   arrays under 1 KiB are stack arrays; larger ones come from
   ``TVMBackendAllocWorkspace``, served by a static arena (``lsnn_runtime.c``).
3. The Relax ``main`` function, a straight line of kernel calls, becomes
   ``lsnn_step``: weights as ``const`` arrays (flash), each intermediate
   tensor as a static array (RAM). The state of every sequence op lives in
   two static halves: a step reads one and its kernels write the next state
   into the other, and the two swap (no copies); a kernel output that is a
   step output is written straight into the caller's output frame.
   (:func:`place`).
"""
from __future__ import annotations

import re

import numpy as np

from lsnn.compiler.importer import TVM_ERRORS, CompileError

from . import ctext

PREFIX = "lsnn_k_"
_TVM_LINE = re.compile(r'^#include "tvm/|^void\* __tvm_ffi__library_ctx')


def lower(plan, target):
    """Relax module of the step graph: ``main`` is a line of ``call_tir``s with static shapes."""
    import tvm
    from tvm import relax

    from lsnn.compiler.importer import to_relax

    shapes = {n: s for n, s in plan.frames} | {s.input: s.shape for s in plan.states}
    mod = to_relax(plan.model, target, shapes)
    passes = [relax.transform.LegalizeOps(), relax.transform.FoldConstant(), relax.transform.AnnotateTIROpPattern(),
              relax.transform.FuseOps(), relax.transform.FuseTIR(), relax.transform.DeadCodeElimination(),
              relax.transform.SpecializePrimFuncBasedOnCallSite()]
    with tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes)(mod)


def _pointer_form(func, name: str):
    """``func`` with pointer parameters and the C calling convention (no packed API)."""
    import tvm
    from tvm import tirx

    ptrs, decls = [], []
    for p in func.params:
        if not tirx.is_buffer_var(p):
            raise CompileError(f"kernel {name}: scalar parameter '{p.name}' is not supported on Cortex-M")
        for d in p.ty.shape:
            if not isinstance(d, tirx.IntImm):
                raise CompileError(f"kernel {name}: buffer '{p.name}' has a symbolic shape after specialisation")
        ptr = tirx.Var(f"{p.name}_p", tvm.ir.PointerType(p.ty.dtype))
        ptrs.append(ptr)
        decls.append(tirx.DeclBuffer(p, data=ptr))
    body = tirx.SeqStmt([*decls, func.body])
    return tirx.PrimFunc(ptrs, body).with_attrs(
        {"global_symbol": name, "calling_conv": 1, "tirx.noalias": True})


def _register_pipeline() -> str:
    """TVM's TIR pipeline, plus the CPU device context that plain C functions lack
    (``LowerTVMBuiltin`` needs it to keep small scratch arrays on the stack)."""
    import tvm
    from tvm import tirx
    from tvm.tirx import compilation_pipeline as cp

    name = "lsnn-cortex-m"
    if name in cp.PIPELINE_MAP:
        return name

    @tvm.transform.module_pass(opt_level=0, name="LSNNDeviceContext")
    def device_context(mod, _ctx):
        zero = tirx.const(0, "int32")
        funcs = {}
        for gv, f in mod.functions.items():
            body = tirx.AttrStmt(zero, "device_id", zero, f.body)
            funcs[gv] = f.with_body(tirx.AttrStmt(zero, "device_type", tirx.const(1, "int32"), body))
        return tvm.IRModule(funcs)

    def factory():
        main, host, device = cp.get_tir_pipeline("s_tir")
        return tvm.transform.Sequential([main, device_context]), host, device

    cp.register_tir_pipeline(name, factory)
    return name


_PROTO = re.compile(r"^void lsnn_k_\w+\(.*\);$", re.M)
# Every kernel parameter is its own array: lsnn_step never passes one array twice to a call, and
# a kernel's outputs are never its inputs (the state's halves swap), so GCC may vectorise freely.
_SIGNATURE = re.compile(r"^void lsnn_k_\w+\(.*\)", re.M)
_POINTER = re.compile(r"(\w+)\* (\w+_p)\b")


def kernels_c(mod, target) -> tuple[str, dict, str]:
    """C source of every kernel in ``mod``, {GlobalVar name -> C function name}, and the
    kernels' prototypes (as TVM declared them) for the model's C file."""
    import tvm
    from tvm import tirx

    funcs, names = {}, {}
    for gv, f in mod.functions.items():
        if isinstance(f, tirx.PrimFunc):
            cname = ctext.identifier(gv.name_hint, PREFIX)
            if cname in funcs:
                cname = f"{cname}_{len(funcs)}"
            names[gv.name_hint] = cname
            funcs[cname] = _pointer_form(f, cname)
    try:
        lib = tvm.tirx.build(tvm.IRModule(funcs), target=target.tvm_target(), pipeline=_register_pipeline())
    except TVM_ERRORS as e:
        msg = str(e).strip().splitlines()
        raise CompileError(f"TVM's C code generator failed for target '{target.name}': "
                           f"{type(e).__name__}: {msg[-1] if msg else e}") from e
    src = _exact_literals(lib.inspect_source(), funcs.values())
    src = src.split("// CodegenC: NOTE: Auto-generated entry function")[0]
    lines = [ln for ln in src.splitlines() if not _TVM_LINE.match(ln)]
    body = "\n".join(lines).replace("TVM_DLL ", "")
    # a kernel whose workspace allocation fails reports it instead of returning an error code
    body = body.replace("return -1;", "{ lsnn_kernel_error(); return; }")
    body = _SIGNATURE.sub(lambda m: _POINTER.sub(r"\1* __restrict__ \2", m.group(0)), body)
    text = ctext.fill("lsnn_kernels.c.in", {"TVM_TARGET": ctext.comment(target.target_dict()), "KERNELS": body})
    return text, names, "\n".join(_PROTO.findall(body))


def _exact_literals(src: str, funcs) -> str:
    """Float literals with 9 significant digits. TVM's C code generator prints 7
    (``%e``), which changes most float32 values; the exact values are read from the
    kernels' TIR and put back in place of their 7-digit forms."""
    exact: dict[str, str] = {}
    for f in funcs:
        for lit in re.findall(r"T\.float32\(([^)]*)\)", f.script()):
            v = np.float32(float(lit))
            if not np.isfinite(v):
                continue
            short, full = f"{abs(float(v)):.6e}f", f"{abs(float(v)):.8e}f"
            if np.float32(float(short[:-1])) == abs(v):
                continue
            if exact.setdefault(short, full) != full:
                raise CompileError(f"two float constants of a kernel print alike in TVM's C ({short}); "
                                   "cannot restore their exact values")
    if not exact:
        return src
    return re.sub(r"(?<![\w.])\d\.\d{6}e[-+]\d\df", lambda m: exact.get(m.group(0), m.group(0)), src)


class _Emitter:
    """Walks Relax ``main`` and writes the C of one time step."""

    def __init__(self, names: dict):
        self.names = names
        self.consts: list[str] = []
        self.buffers: dict[str, int] = {}  # static array -> floats
        self.calls: list[str] = []
        self.env: dict = {}       # relax Var -> C expression (or a list for tuples)
        self._const_ids: dict = {}
        self.flash = 0

    def const(self, c) -> str:
        key = c  # TVM objects hash by identity; the dict keeps them alive
        if key not in self._const_ids:
            arr = c.value.numpy()
            if arr.dtype != np.float32:
                raise CompileError(f"constant of dtype {arr.dtype}: Cortex-M kernels take float32 only")
            name = f"lsnn_const_{len(self._const_ids)}"
            values = ctext.floats(arr, f"constant {name} of the lowered model")
            self.consts.append(f"static const float {name}[{max(arr.size, 1)}] = {{\n{values}\n}};")
            self.flash += arr.size * 4
            self._const_ids[key] = f"(float *){name}"  # kernels only read them
        return self._const_ids[key]

    def buffer(self, shape, dtype) -> str:
        if dtype != "float32":
            raise CompileError(f"intermediate tensor of dtype {dtype}: Cortex-M kernels take float32 only")
        n = int(np.prod([int(d) for d in shape])) if shape else 1
        name = f"lsnn_buf_{len(self.buffers)}"
        self.buffers[name] = max(n, 1)
        return name

    def value(self, expr):
        from tvm import relax
        from tvm.ir.expr import Constant

        if isinstance(expr, Constant):
            return self.const(expr)
        if isinstance(expr, relax.Var):
            if expr not in self.env:
                raise CompileError(f"unbound variable {expr.name_hint} in the lowered model")
            return self.env[expr]
        if isinstance(expr, relax.Tuple):
            return [self.value(f) for f in expr.fields]
        if isinstance(expr, relax.TupleGetItem):
            return self.value(expr.tuple_value)[expr.index]
        raise CompileError(f"cannot run {type(expr).__name__} on Cortex-M: {expr}")

    def outputs_of(self, ty):
        from tvm import relax

        if isinstance(ty, relax.TupleType):
            return [self.outputs_of(f) for f in ty.fields]
        return self.buffer(list(ty.shape.values), ty.dtype)

    def emit(self, main):
        import tvm
        from tvm import relax

        call_tir = tvm.ir.Op.get("relax.call_tir")
        for block in main.body.blocks:
            for b in block.bindings:
                v = b.value
                if isinstance(v, relax.Call) and v.op.same_as(call_tir):
                    fn = v.args[0].name_hint
                    out = self.outputs_of(b.var.ty)
                    args = [self.value(a) for a in v.args[1].fields]
                    flat_out = out if isinstance(out, list) else [out]
                    self.calls.append(f"  {self.names[fn]}({', '.join(args + flat_out)});")
                    self.env[b.var] = out
                elif isinstance(v, relax.Call):
                    raise CompileError(f"operator {v.op} has no Cortex-M lowering")
                else:
                    self.env[b.var] = self.value(v)
        ret = self.value(main.body.body)
        return ret if isinstance(ret, list) else [ret]


#: C types of the inputs a frame carries: each element one 4-byte word of the frame
INPUT_TYPES = {"float32": "float", "int32": "int32_t"}


def _input_type(name: str, param) -> str:
    dtype = str(param.ty.dtype)
    if dtype not in INPUT_TYPES:
        raise CompileError(f"graph input '{name}' is {dtype}; Cortex-M takes inputs of "
                           f"{' or '.join(INPUT_TYPES)} only")
    return INPUT_TYPES[dtype]


def _bind_inputs(em: _Emitter, main, plan) -> dict:
    """Bind ``main``'s parameters to the C input frame ``x`` and the state array; their layout."""
    n_frames = len(plan.frames)
    if len(main.params) != n_frames + len(plan.states):
        raise CompileError(f"lowered model takes {len(main.params)} inputs, "
                           f"expected {n_frames + len(plan.states)}")
    layout = {"frames": [], "outputs": [], "states": []}
    off = 0
    for (name, shape), p in zip(plan.frames, main.params[:n_frames]):
        em.env[p] = f"({_input_type(name, p)} *)(x + {off})"
        size = int(np.prod(shape))
        layout["frames"].append({"name": name, "shape": shape, "offset": off, "size": size, "dtype": str(p.ty.dtype)})
        off += size
    layout["input_size"], off = off, 0
    for s, p in zip(plan.states, main.params[n_frames:]):
        em.env[p] = f"(lsnn_state + {off})"
        layout["states"].append({"node": s.node, "name": s.name, "shape": s.shape, "offset": off,
                                 "size": s.size, "source": s.source, "final": s.final})
        off += s.size
    layout["state_size"] = off
    return layout


def _bind_outputs(rets: list, plan, layout: dict) -> list[tuple[str, str, int]]:
    """Where each step output (in ``y``) and each next state (in the state's next half) goes:
    ``(destination, tensor, floats)``, in that order."""
    out_names = list(dict.fromkeys([n for n, _ in plan.outputs] + [s.output for s in plan.states]))
    if len(rets) != len(out_names):
        raise CompileError(f"lowered model returns {len(rets)} tensors, expected {len(out_names)}")
    ret_of = dict(zip(out_names, rets))
    off = 0
    for name, shape in plan.outputs:
        size = int(np.prod(shape))
        layout["outputs"].append({"name": name, "shape": shape, "offset": off, "size": size})
        off += size
    layout["output_size"] = off
    # next states first: a tensor that is both a next state and a step output is placed in the state
    return ([(f"(lsnn_next + {st['offset']})", ret_of[s.output], s.size) for s, st in zip(plan.states, layout["states"])]
            + [(f"(y + {o['offset']})", ret_of[o["name"]], o["size"]) for o in layout["outputs"]])


def place(buffers: dict, destinations: list) -> tuple[dict, list]:
    """Each intermediate array that is a destination's tensor becomes that destination (its kernel
    writes it there), once; the rest are copied. Returns {array -> destination} and the copies."""
    placed, copies = {}, []
    for dest, tensor, size in destinations:
        if tensor in buffers and tensor not in placed and buffers[tensor] == size:
            placed[tensor] = dest
        else:
            copies.append(f"  memcpy({dest}, {placed.get(tensor, tensor)}, {size} * sizeof(float));")
    return placed, copies


def _described(items: list, label) -> str:
    """One comment line per item of a layout: its label (model names through ctext.comment) and floats."""
    return "\n".join(f" *   {label(f)}: floats {f['offset']}..{f['offset'] + f['size'] - 1}"
                     for f in items) or " *   (none)"


def _tensor(item: dict) -> str:
    dtype = item.get("dtype", "float32")  # outputs are float32
    return f"{ctext.comment(item['name'])} (shape {item['shape']}{'' if dtype == 'float32' else ', ' + dtype})"


def _state(item: dict) -> str:
    return f"{ctext.comment(item['node'])} state {item['name']}"


def header(layout: dict, call: str) -> str:
    """``lsnn_model.h``: the sizes and the API, what one call runs (``call``) and the layout of its
    frames in a comment."""
    return ctext.fill("lsnn_model.h.in", {"CALL": call,
        "INPUTS": _described(layout["frames"], _tensor), "OUTPUTS": _described(layout["outputs"], _tensor),
        "STATES": _described(layout["states"], _state),
        "INPUT_SIZE": layout["input_size"], "OUTPUT_SIZE": layout["output_size"],
        "STATE_SIZE": layout["state_size"]})


def model_c(mod, names: dict, prototypes: str, plan) -> tuple[str, str, dict]:
    """``lsnn_model.c`` and ``lsnn_model.h`` for the lowered step, and the layout of its I/O."""
    em = _Emitter(names)
    layout = _bind_inputs(em, mod["main"], plan)
    rets = em.emit(mod["main"])
    placed, copies = place(em.buffers, _bind_outputs(rets, plan, layout))
    rest = {name: n for name, n in em.buffers.items() if name not in placed}
    calls = re.sub(r"\blsnn_buf_\d+\b", lambda m: placed.get(m.group(0), m.group(0)), "\n".join(em.calls))
    initial = plan.initial_state() if plan.states else np.zeros(1, np.float32)
    c = ctext.fill("lsnn_model.c.in", {
        "PROTOTYPES": prototypes, "CONSTANTS": "\n".join(em.consts),
        "BUFFERS": "\n".join(f"static float {name}[{n}];" for name, n in rest.items()),
        "INITIAL_STATE": ctext.floats(initial, "the initial state"), "CALLS": calls, "COPIES": "\n".join(copies)})
    layout.update({"weights_bytes": em.flash,
                   "activations_bytes": 4 * sum(rest.values()) + 2 * 4 * layout["state_size"]})
    return c, header(layout, plan.call), layout
