"""ONNX to Relax: TVM's own ONNX importer, extended by subclassing.

Standard ops go through TVM's converters. ``ai.lsnn::ALIF``, ``ai.lsnn::LI``
and ONNX ``LSTM``, ``GRU`` and ``RNN`` (:mod:`lsnn.compiler.onnx.recurrent`) go to ours,
whether or not the model carries function
bodies (the importer never reads them): each becomes one ``call_tir`` of the
target's kernel, with the time loop inside. A node of any other domain is
rejected: TVM's converters look at the op name alone, so ``ai.lsnnx::ALIF``
or ``com.example::Relu`` would otherwise be taken for something they are not.
Inputs and state slots are read by name from :mod:`lsnn.compiler.onnx.schema`.

Each sequence node's kernel is told which of its outputs the graph reads
(``outputs``: a name given to another node, to a subgraph or as a graph
output); an output named ``""`` or read by nothing is dead, and the kernel
need not compute it (``V`` and ``A`` of an ALIF are read only by probes).
"""
from __future__ import annotations

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter, _get_convert_map

from lsnn.compiler.errors import CompileError
from lsnn.compiler.onnx.recurrent import RecurrentConverters
from lsnn.compiler.onnx.schema import ALIF, DOMAIN, LI, ONNX_DOMAINS, OPS, RECURRENT, sequence_op
from lsnn.compiler.onnx.standard_ops import OVERRIDES, check_constant_inputs
from lsnn.reference.errors import LsnnError
from lsnn.targets.base import FUSED_READOUT

_CONST = tvm.ir.expr.Constant
F32 = "float32"

#: What TVM raises: tvm_ffi maps C++ error kinds to these builtins (tvm_ffi/error.py), the
#: classes of tvm.error derive from RuntimeError, and the Python frontend raises the others.
TVM_ERRORS = (RuntimeError, ValueError, TypeError, AttributeError, KeyError, IndexError, AssertionError)


#: The attribute the importer puts on each sequence node it converts: a bit mask of the node's
#: outputs (bit k: output k, in the op schema's order) that the graph reads
OUTPUTS_READ = "lsnn_outputs_read"


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every value name that a node of ``graph`` or of its subgraphs takes, and the graph's outputs."""
    read = {o.name for o in graph.output}
    for node in graph.node:
        read.update(node.input)
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                read |= names_read(g)
    return read


#: On a layer node whose output a readout reads, so that a target may compute the readout in
#: the layer's kernel: the names of the readout's other inputs (``""`` where omitted), each
#: known when the layer's node is converted, and whether anything else reads the layer's
#: output (:data:`READ_ELSEWHERE`: ALIF's ``Z``, LSTM's ``Y``, stored only then). An ALIF's LI
#: readout (:func:`readout_pairs`, kernel ``ALIF+LI``) also carries its :data:`OUTPUTS_READ`
#: mask; an LSTM's ``Squeeze -> MatMul -> Add`` chain (:func:`lstm_readouts`, kernel
#: ``LSTM+Readout``) has the ``MatMul``'s weight and the ``Add``'s bias. The layer node and the
#: node whose output the fused kernel gives (the LI, the chain's last) carry the pair's key
#: (the layer node's index).
READOUT_INPUTS = "lsnn_readout_inputs"
READOUT_READ = "lsnn_readout_outputs_read"
READ_ELSEWHERE = "lsnn_read_elsewhere"
PAIR = "lsnn_readout_pair"


def _mask(node: onnx.NodeProto, read: set[str]) -> int:
    return sum(1 << k for k, name in enumerate(node.output) if name and name in read)


def _zeros_made_by_nodes(graph: onnx.GraphProto) -> set[str]:
    """Values that are zeros of a shape computed at run time (``ConstantOfShape`` without a value
    or with 0): the exporter's default initial states, which a kernel may take as omitted."""
    zeros = set()
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.domain in ONNX_DOMAINS:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is None or not onnx.numpy_helper.to_array(value).any():
                zeros.add(node.output[0])
    return zeros


def _reads_shape_only(node: onnx.NodeProto) -> bool:
    return node.op_type in ("Shape", "Size") and node.domain in ONNX_DOMAINS


def known_before(graph: onnx.GraphProto) -> list[set[str]]:
    """``[k]``: the values there are when node ``k`` is converted (the importer takes the nodes
    in order): initializers, graph inputs, outputs of the nodes before it, and ``""``."""
    known = [{i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}]
    for node in graph.node:
        known.append(known[-1] | set(node.output))
    return known


def readout_pairs(graph: onnx.GraphProto) -> dict[int, tuple[int, list[str]]]:
    """ALIF node index -> (index, other inputs) of the first LI node that reads its spikes and
    whose other inputs are known when the ALIF node is converted (:func:`known_before`), or
    zeros made by a node (an initial state that is all zeros: given as ``""``, omitted)."""
    known = known_before(graph)
    zeros = _zeros_made_by_nodes(graph)
    spikes = {node.output[0]: k for k, node in enumerate(graph.node)
              if sequence_op(node) is ALIF and node.output and node.output[0]}
    pairs = {}
    for k, node in enumerate(graph.node):
        alif = spikes.get(node.input[0]) if sequence_op(node) is LI and node.input else None
        others = ["" if name in zeros else name for name in node.input[1:]]
        if alif is not None and alif not in pairs and set(others) <= known[alif]:
            pairs[alif] = k, others
    return pairs


def _onnx_op(node: onnx.NodeProto, op: str) -> bool:
    return node.op_type == op and node.domain in ONNX_DOMAINS


def _readers(graph: onnx.GraphProto) -> dict[str, list[int]]:
    """Value name -> indices of the nodes of ``graph`` that take it; ``-1`` for a graph output or
    a value a subgraph reads."""
    readers: dict[str, list[int]] = {}
    for k, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(k)
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                for name in names_read(g):
                    readers.setdefault(name, []).append(-1)
    for o in graph.output:
        readers.setdefault(o.name, []).append(-1)
    return readers


def _constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """The values of the initializers and of the ``Constant`` nodes that give a tensor."""
    values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if _onnx_op(node, "Constant"):
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = onnx.numpy_helper.to_array(a.t)
                elif a.name == "value_ints":
                    values[node.output[0]] = np.array(list(a.ints), np.int64)
    return values


def _squeezes_axis_1(node: onnx.NodeProto, constants: dict) -> bool:
    """A ``Squeeze`` of axis 1 of a rank-4 value (LSTM's ``Y``), the axes given as a constant
    input (opset 13+) or as the attribute."""
    if not _onnx_op(node, "Squeeze"):
        return False
    attr = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    given = node.input[1] if len(node.input) > 1 and node.input[1] else None
    axes = attr if given is None else constants.get(given)
    return axes is not None and np.asarray(axes).reshape(-1).tolist() in ([1], [-3])


def _forward_time_major(node: onnx.NodeProto) -> bool:
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    return a.get("direction", b"forward") in (b"forward", "forward") and a.get("layout", 0) == 0


def lstm_readouts(graph: onnx.GraphProto) -> dict[int, tuple[int, list[str], bool]]:
    """LSTM node index -> (index of the chain's last node, [weight, bias or ""], whether ``Y``
    is read elsewhere) of each forward, time-major LSTM whose ``Y`` a ``Squeeze`` of axis 1
    takes to ``[T, B, H]``, that a ``MatMul`` multiplies by a 2-D constant known when the LSTM
    is converted (:func:`known_before`), followed by an ``Add`` of such a constant (either
    operand) when that ``Add`` is the product's only reader. ``Y`` is read elsewhere when a node
    other than the ``Squeeze`` takes it, or one other than the ``MatMul`` the squeezed value. The
    weight's and bias's values are checked when the LSTM is converted (float32, a weight of ``H``
    rows, a bias that broadcasts along the last axis only)."""
    known, readers, constants = known_before(graph), _readers(graph), _constant_values(graph)
    nodes = graph.node
    chains = {}
    for k, node in enumerate(nodes):
        if not (_onnx_op(node, "LSTM") and node.output and node.output[0] and _forward_time_major(node)):
            continue
        y = node.output[0]
        constant = known[k] & set(constants)
        for s in (r for r in readers.get(y, []) if r >= 0 and _squeezes_axis_1(nodes[r], constants)
                  and nodes[r].input[0] == y):
            h_seq = nodes[s].output[0]
            m = next((r for r in readers.get(h_seq, []) if r >= 0 and _onnx_op(nodes[r], "MatMul")
                      and list(nodes[r].input) == [h_seq, nodes[r].input[1]] and nodes[r].input[1] in constant), None)
            if m is None:
                continue
            last, inputs = m, [nodes[m].input[1], ""]
            product = nodes[m].output[0]
            if len(readers.get(product, [])) == 1 and readers[product][0] >= 0:
                add = nodes[readers[product][0]]
                bias = [n for n in add.input if n != product]
                if _onnx_op(add, "Add") and len(add.input) == 2 and len(bias) == 1 and bias[0] in constant:
                    last, inputs = readers[product][0], [nodes[m].input[1], bias[0]]
            elsewhere = any(r != s for r in readers[y]) or any(r != m for r in readers[h_seq])
            chains[k] = last, inputs, elsewhere
            break
    return chains


def _mark_pair(marked: onnx.GraphProto, layer: int, last: int, inputs: list[str], elsewhere: bool,
               extra=()) -> None:
    """The attributes of a layer node and its readout (:data:`PAIR`)."""
    marked.node[layer].attribute.extend([
        onnx.helper.make_attribute(PAIR, layer),
        onnx.helper.make_attribute(READOUT_INPUTS, [n.encode() for n in inputs]),
        onnx.helper.make_attribute(READ_ELSEWHERE, int(elsewhere)), *extra])
    marked.node[last].attribute.append(onnx.helper.make_attribute(PAIR, layer))


def with_outputs_read(graph: onnx.GraphProto) -> onnx.GraphProto:
    """The nodes of ``graph``, each sequence node carrying :data:`OUTPUTS_READ`, and each ALIF
    with an LI readout (:func:`readout_pairs`), each LSTM with a readout chain
    (:func:`lstm_readouts`) and that readout the pair's attributes."""
    read = names_read(graph)
    marked = onnx.GraphProto()
    for node in graph.node:
        copy = marked.node.add()
        copy.CopyFrom(node)
        if sequence_op(node) is not None:
            copy.attribute.append(onnx.helper.make_attribute(OUTPUTS_READ, _mask(node, read)))
    for a, (li, inputs) in readout_pairs(graph).items():  # Shape and Size read no values: the exporter's zeros use them
        others = onnx.GraphProto(node=[n for k, n in enumerate(graph.node) if k != li and not _reads_shape_only(n)],
                                 output=graph.output)
        _mark_pair(marked, a, li, inputs, graph.node[a].output[0] in names_read(others),
                   [onnx.helper.make_attribute(READOUT_READ, _mask(graph.node[li], read))])
    for lstm, (last, inputs, elsewhere) in lstm_readouts(graph).items():
        _mark_pair(marked, lstm, last, inputs, elsewhere)
    return marked


def _static(d):
    """An int when the dimension is known at compile time, else None."""
    return int(d) if isinstance(d, (int, tvm.tirx.IntImm)) else None


def _shape(expr) -> list:
    ty = expr.ty if hasattr(expr, "ty") else expr.struct_info
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise CompileError(f"an input of unknown shape reached a sequence op: {expr}")
    return list(ty.shape.values)


def node_label(node: onnx.NodeProto, index: int | None = None) -> str:
    """How errors name a node: by its name, else by its index in the graph (``node #3
    (ai.onnx::Gemm)``), else (index unknown) by its op."""
    op = f"{node.domain or 'ai.onnx'}::{node.op_type}"
    if node.name:
        return f"node '{node.name}' ({op})"
    return f"node #{index} ({op})" if index is not None else f"a node {op}"


def check_domain(node: onnx.NodeProto, index: int | None = None) -> None:
    """Only ONNX's standard ops and the ``ai.lsnn`` ops are compiled (an ALIF of ONNX's domain is
    rejected by the validator, for every runtime)."""
    label = node_label(node, index)
    if node.domain == DOMAIN and node.op_type not in OPS:
        raise CompileError(f"{label}: unknown op {DOMAIN}::{node.op_type} (the domain has "
                           f"{', '.join(sorted(OPS))})")
    if node.domain not in ONNX_DOMAINS + (DOMAIN,):
        raise CompileError(f"{label}: op {node.op_type} of domain '{node.domain}' is not supported; "
                           f"the compiler takes ONNX's standard ops and the {DOMAIN} ops "
                           f"{', '.join(sorted(OPS))}")


class LSNNImporter(RecurrentConverters, ONNXGraphImporter):
    def __init__(self, target, shape_dict=None, dtype_dict="float32"):
        super().__init__(shape_dict or {}, dtype_dict, keep_params_in_input=False, sanitize=True)
        self.target = target
        self._readouts: dict[int, relax.Expr] = {}  # pair key -> what a fused kernel gives the readout node
        self._node_label = "a node"  # of the node being converted (node_label)

    # -- which ops are ours ------------------------------------------------
    def _check_for_unsupported_ops(self, graph: onnx.GraphProto):
        """The first node that neither TVM's frontend nor this importer converts is refused."""
        known = set(_get_convert_map()) | set(OVERRIDES) | {"If", "Constant"}
        for k, node in enumerate(graph.node):
            check_domain(node, k)
            if sequence_op(node) is None and node.op_type not in known:
                raise CompileError(f"{node_label(node, k)}: op {node.op_type} is not supported (neither TVM's "
                                   f"ONNX frontend nor this compiler converts it)")

    def _construct_nodes(self, graph: onnx.GraphProto):
        """Node by node, so that an error of TVM's converters names the node it failed on."""
        for k, node in enumerate(with_outputs_read(graph).node):
            self._node_label = node_label(node, k)
            try:
                super()._construct_nodes(onnx.GraphProto(node=[node]))
            except LsnnError:
                raise
            except (*TVM_ERRORS, NotImplementedError) as e:
                lines = [line for line in str(e).strip().splitlines() if line.strip()]
                raise CompileError(f"{self._node_label}: TVM's converter of {node.op_type} failed: "
                                   f"{type(e).__name__}: {lines[-1] if lines else ''}") from e

    def _convert_operator(self, op_name, inputs, attrs, opset):
        # only ai.lsnn nodes are named ALIF or LI here, only ONNX's LSTM, GRU, RNN, MatMul, Add (check_domain)
        if op_name in ("MatMul", "Add") and PAIR in attrs:  # the last node of an LSTM's readout chain
            fused = self._readouts.pop(attrs.pop(PAIR), None)  # None: its LSTM's kernel did not compute it
            if fused is not None:
                return fused
        converter = {ALIF.name: self._alif, LI.name: self._li}.get(op_name)
        if op_name in RECURRENT:
            return self._recurrent(RECURRENT[op_name], inputs, attrs)
        if converter is not None:
            return converter(inputs, attrs)
        check_constant_inputs(op_name, inputs, self._node_label)
        override = OVERRIDES.get(op_name)
        if override is None:
            return super()._convert_operator(op_name, inputs, attrs, opset)

        def tvm_convert(ins, ats):
            return super(LSNNImporter, self)._convert_operator(op_name, ins, ats, opset)

        return self.bb.normalize(override(self.bb, inputs, attrs, self._node_label, tvm_convert))

    # -- helpers -----------------------------------------------------------
    def _transposed(self, w):
        """``w^T``, folded now when ``w`` is a constant (weights usually are)."""
        if isinstance(w, _CONST):
            return relax.const(np.ascontiguousarray(w.value.numpy().T))
        return self.bb.emit(relax.op.permute_dims(w))

    def _zeros(self, shape):
        return self.bb.emit(relax.op.zeros(relax.ShapeExpr(shape), F32))

    def _call(self, prim_func, name, args, out_shapes):
        gvar = self.bb.add_func(prim_func, name)
        out = [relax.TensorType(s, F32) for s in out_shapes]
        return self.bb.emit(relax.call_tir(gvar, args, out))

    def _label(self, op, attrs):
        """The node being converted, as errors name it (:func:`node_label`)."""
        return self._node_label

    def _bind(self, schema, inputs, attrs) -> dict:
        """The node's inputs by the schema's names; a missing required one is an error."""
        x = schema.bind(inputs)
        missing = [p.name for p in schema.inputs if p.required and x[p.name] is None]
        if missing:
            raise CompileError(f"{self._label(schema.name, attrs)}: required input '{missing[0]}' is missing")
        return x

    def _finite_constants(self, label, named) -> bool:
        """True when every weight is a constant (folded or given; each checked finite), so that
        a kernel may skip zero inputs (``0 * w`` is 0 only for finite ``w``)."""
        for name, w in named.items():
            if not isinstance(w, _CONST):
                return False
            bad = int(np.size(w.value.numpy()) - np.isfinite(w.value.numpy()).sum())
            if bad:
                raise CompileError(f"{label}: weight '{name}' has {bad} non-finite value(s) (NaN or Inf)")
        return True

    def _outputs_read(self, schema, attrs) -> frozenset:
        """The names of the node's outputs the graph reads (all of them in a subgraph, which is
        not marked: :func:`with_outputs_read`)."""
        mask = attrs.get(OUTPUTS_READ, -1)
        return frozenset(p.name for k, p in enumerate(schema.outputs) if mask >> k & 1)

    def _state(self, x, schema, shape):
        return [x[s.input] if x[s.input] is not None else self._zeros(shape) for s in schema.states]

    # -- converters ----------------------------------------------------------
    def _alif(self, inputs, attrs):
        x = self._bind(ALIF, inputs, attrs)
        label = self._label("ALIF", attrs)
        Tn, B, _ = _shape(x["X"])
        H = _shape(x["W"])[0]
        a = ALIF.attribute_values(attrs)
        node = dict(thr=float(a["thr"]), n_refractory=int(a["n_refractory"]),
                    dims={"I": _static(_shape(x["W"])[1]), "H": _static(H)},
                    finite_weights=self._finite_constants(label, {"W": x["W"], "R": x["R"]}))
        args = [x["X"], self._transposed(x["W"]), self._transposed(x["R"]), x["beta"], x["alpha"], x["rho"]]
        args += self._state(x, ALIF, [B, H])
        outs = [[Tn, B, H]] * 3 + [[B, H]] * len(ALIF.states)
        readout = self._readout(attrs)
        if readout is not None and node["finite_weights"]:
            return self._alif_with_readout(readout, node, args, outs, attrs)
        kernel = self.target.kernel("ALIF", **node, outputs=self._outputs_read(ALIF, attrs))
        return self._call(kernel, "alif", args, outs)

    def _readout(self, attrs) -> dict | None:
        """The LI readout the ALIF node's kernel may compute (:func:`readout_pairs`), its inputs by
        name; None when there is none, the target has no such kernel, or its weights are not
        constants (a skipped silent neuron is exact only for finite weights)."""
        if PAIR not in attrs or not self.target.fuses_readout():
            return None
        names = [n.decode() for n in attrs[READOUT_INPUTS]]
        x = LI.bind([None] + [self._nodes[n] if n else None for n in names])
        weights = {"W": x["W"], **({"bias": x["bias"]} if x["bias"] is not None else {})}
        return x if self._finite_constants("LI readout", weights) else None

    def _alif_with_readout(self, x, node, args, outs, attrs):
        """One ``ALIF+LI`` kernel for the ALIF node and its readout; the LI node takes its
        results (:meth:`_li`). ``Z`` is stored only if something besides the readout reads it."""
        Tn, B, H = outs[0]
        O = _shape(x["W"])[0]
        read = self._outputs_read(ALIF, attrs)
        if not attrs[READ_ELSEWHERE]:
            read -= {"Z"}
        li_read = frozenset(p.name for k, p in enumerate(LI.outputs) if attrs[READOUT_READ] >> k & 1)
        kernel = self.target.kernel(FUSED_READOUT, **{**node, "dims": {**node["dims"], "O": _static(O)}},
                                    readout=li_read, outputs=read)
        bias = x["bias"] if x["bias"] is not None else self._zeros([O])
        call = self._call(kernel, "alif_li", args + [self._transposed(x["W"]), x["alpha"], bias,
                                                     *self._state(x, LI, [B, O])],
                          outs + [[Tn, B, O], [B, O]])
        self._readouts[attrs[PAIR]] = relax.Tuple([relax.TupleGetItem(call, k) for k in (7, 8)])
        return relax.Tuple([relax.TupleGetItem(call, k) for k in range(7)])

    def _li(self, inputs, attrs):
        if attrs.get(PAIR) in self._readouts:  # computed by its ALIF's kernel
            return self._readouts.pop(attrs[PAIR])
        x = self._bind(LI, inputs, attrs)
        label = self._label("LI", attrs)
        Tn, B, _ = _shape(x["X"])
        O = _shape(x["W"])[0]
        bias = x["bias"] if x["bias"] is not None else self._zeros([O])
        kernel = self.target.kernel("LI", dims={"I": _static(_shape(x["W"])[1]), "O": _static(O)},
                                    finite_weights=self._finite_constants(label, {"W": x["W"]}),
                                    outputs=self._outputs_read(LI, attrs))
        return self._call(kernel, "li", [x["X"], self._transposed(x["W"]), x["alpha"], bias,
                                         *self._state(x, LI, [B, O])], [[Tn, B, O], [B, O]])


def to_relax(model: onnx.ModelProto, target, shape_dict=None):
    """The Relax module of ``model`` for ``target``."""
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 18)
    importer = LSNNImporter(target, shape_dict)
    return importer.from_onnx(model.graph, opset)
