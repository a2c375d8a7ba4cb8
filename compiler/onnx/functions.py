"""ONNX function bodies of the ``ai.lsnn`` ops: one ``Scan`` over standard ops each,
so that any ONNX runtime executes a model with no extra library.

Each body follows the equations of ``shared/spec/ops.md`` operation by
operation, in the same order as :mod:`lsnn.reference.functional`. Bodies take
every input of the op; :func:`attach` completes a node's omitted optional
inputs with zeros built in the main graph, so nodes may omit them as the spec
allows.
"""
from __future__ import annotations

import onnx
from onnx import AttributeProto, TensorProto, helper

from .schema import ALIF, DOMAIN, LI, ONNX_OPSET, OPS, VERSION

F = TensorProto.FLOAT


def _ref_constant(out: str, attr: str, kind: int, field: str) -> onnx.NodeProto:
    node = helper.make_node("Constant", [], [out])
    a = AttributeProto(name=field, ref_attr_name=attr, type=kind)
    node.attribute.append(a)
    return node


def _scalar(out: str, value: float) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [out], value=helper.make_tensor(out, F, [], [value]))


def _vi(name):
    return helper.make_tensor_value_info(name, F, None)


def alif_function() -> onnx.FunctionProto:
    n = helper.make_node
    step = helper.make_graph(
        [
            n("Mul", ["rho", "a_in"], ["rho_a"]), n("Mul", ["one_m_rho", "z_in"], ["in_a"]),
            n("Add", ["rho_a", "in_a"], ["a"]),                                   # a = rho*a + (1-rho)*z
            n("Mul", ["beta", "a"], ["beta_a"]), n("Add", ["thr_c", "beta_a"], ["A"]),  # A = thr + beta*a
            n("MatMul", ["z_in", "RT"], ["rec"]), n("Add", ["cur_t", "rec"], ["I"]),    # I = X W^T + z R^T
            n("Mul", ["alpha", "v_in"], ["alpha_v"]), n("Mul", ["one_m_alpha", "I"], ["in_v"]),
            n("Add", ["alpha_v", "in_v"], ["v_int"]), n("Mul", ["A", "z_in"], ["reset"]),
            n("Sub", ["v_int", "reset"], ["v"]),                                  # v = alpha*v + (1-alpha)*I - A*z
            n("Greater", ["v", "A"], ["above"]), n("Equal", ["r_in", "zero"], ["ready"]),
            n("And", ["above", "ready"], ["fire"]), n("Cast", ["fire"], ["s"], to=F),  # s = H(v-A) * (r == 0)
            n("Sub", ["r_in", "one"], ["r_dec"]), n("Max", ["r_dec", "zero"], ["r_left"]),
            n("Where", ["fire", "n_ref", "r_left"], ["r"]),                       # r = s ? n_ref : max(r-1, 0)
            n("Identity", ["s"], ["Z_t"]), n("Identity", ["v"], ["V_t"]), n("Identity", ["A"], ["A_t"]),
        ],
        "alif_step",
        [_vi(x) for x in ("v_in", "a_in", "z_in", "r_in", "cur_t")],
        [_vi(x) for x in ("v", "a", "s", "r", "Z_t", "V_t", "A_t")],
    )
    nodes = [
        _scalar("one", 1.0), _scalar("zero", 0.0),
        _ref_constant("thr_c", "thr", AttributeProto.FLOAT, "value_float"),
        _ref_constant("n_ref_i", "n_refractory", AttributeProto.INT, "value_int"),
        n("Cast", ["n_ref_i"], ["n_ref"], to=F),
        n("Sub", ["one", "rho"], ["one_m_rho"]), n("Sub", ["one", "alpha"], ["one_m_alpha"]),
        n("Transpose", ["W"], ["WT"], perm=[1, 0]), n("Transpose", ["R"], ["RT"], perm=[1, 0]),
        n("MatMul", ["X", "WT"], ["cur"]),  # input projection of all steps at once
        n("Scan", ["initial_v", "initial_a", "initial_z", "initial_r", "cur"],
          ["final_v", "final_a", "final_z", "final_r", "Z", "V", "A"], body=step, num_scan_inputs=1),
    ]
    return helper.make_function(
        DOMAIN, ALIF.name, [p.name for p in ALIF.inputs], [p.name for p in ALIF.outputs], nodes,
        [helper.make_opsetid("", ONNX_OPSET)], attributes=[],
        attribute_protos=[helper.make_attribute("thr", 0.01), helper.make_attribute("n_refractory", 0)],
        doc_string="ai.lsnn::ALIF v1, as shared/spec/ops.md defines it",
    )


def li_function() -> onnx.FunctionProto:
    n = helper.make_node
    step = helper.make_graph(
        [n("Mul", ["alpha", "y_in"], ["alpha_y"]), n("Add", ["alpha_y", "d_t"], ["y"]),
         n("Identity", ["y"], ["Y_t"])],
        "li_step", [_vi("y_in"), _vi("d_t")], [_vi("y"), _vi("Y_t")],
    )
    nodes = [
        _scalar("one", 1.0),
        n("Transpose", ["W"], ["WT"], perm=[1, 0]), n("MatMul", ["X", "WT"], ["xw"]),
        n("Add", ["xw", "bias"], ["xwb"]), n("Sub", ["one", "alpha"], ["one_m_alpha"]),
        n("Mul", ["one_m_alpha", "xwb"], ["drive"]),  # (1 - alpha) * (X W^T + bias), all steps
        n("Scan", ["initial_y", "drive"], ["final_y", "Y"], body=step, num_scan_inputs=1),
    ]
    return helper.make_function(
        DOMAIN, LI.name, [p.name for p in LI.inputs], [p.name for p in LI.outputs], nodes,
        [helper.make_opsetid("", ONNX_OPSET)],
        doc_string="ai.lsnn::LI v1, as shared/spec/ops.md defines it",
    )


FUNCTIONS = {"ALIF": alif_function, "LI": li_function}


def _zeros_like_rows(graph_nodes: list, prefix: str, batch_of: str, width_of: str | None) -> str:
    """Nodes computing zeros of shape [B, H] (B from dim 1 of ``batch_of``, H from dim 0 of
    ``width_of``) or [H] when ``batch_of`` is None; returns the output name."""
    n = helper.make_node
    dims = []
    if batch_of is not None:
        graph_nodes.append(n("Shape", [batch_of], [f"{prefix}_bshape"], start=1, end=2))
        dims.append(f"{prefix}_bshape")
    graph_nodes.append(n("Shape", [width_of], [f"{prefix}_hshape"], start=0, end=1))
    dims.append(f"{prefix}_hshape")
    if len(dims) > 1:
        graph_nodes.append(n("Concat", dims, [f"{prefix}_shape"], axis=0))
        shape = f"{prefix}_shape"
    else:
        shape = dims[0]
    graph_nodes.append(n("ConstantOfShape", [shape], [f"{prefix}_zeros"],
                         value=helper.make_tensor("v", F, [1], [0.0])))
    return f"{prefix}_zeros"


def complete_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every ``ai.lsnn`` node all its inputs, zeros where the spec's optional ones are
    omitted, and list all its outputs (``""`` for the unused ones)."""
    graph = model.graph
    new_nodes = []
    for i, node in enumerate(graph.node):
        if node.domain == DOMAIN and node.op_type in OPS:
            schema = OPS[node.op_type]
            names = list(node.input) + [""] * (len(schema.inputs) - len(node.input))
            tag = f"{node.name or node.op_type}_{i}_default"
            x, w = names[0], names[1]
            for k, port in enumerate(schema.inputs):
                if names[k] or port.required:
                    continue
                batch = None if port.shape == ("O",) else x
                names[k] = _zeros_like_rows(new_nodes, f"{tag}_{port.name}", batch, w)
            del node.input[:]
            node.input.extend(names)
            # ONNX's function shape inference wants every output listed; "" leaves one unused
            node.output.extend([""] * (len(schema.outputs) - len(node.output)))
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    return model


def attach(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` that stock runtimes can execute: every ``ai.lsnn`` node gets all its
    inputs and the suite's function body, unless the model already carries one for that op."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    complete_inputs(out)
    used = {n.op_type for n in out.graph.node if n.domain == DOMAIN and n.op_type in OPS}
    have = {(f.domain, f.name) for f in out.functions}
    for op in sorted(used):
        if (DOMAIN, op) not in have:
            out.functions.append(FUNCTIONS[op]())
    if used and not any(o.domain == DOMAIN for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid(DOMAIN, VERSION))
    return out
