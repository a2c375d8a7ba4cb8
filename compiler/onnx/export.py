"""Export of the reference models to ONNX.

``LSNN`` and ``LIFNet`` go through ``torch.onnx.export`` like any user's
module (:mod:`lsnn.compiler.exporter`): one ``ai.lsnn::ALIF`` node and one
``ai.lsnn::LI`` node, with their function bodies attached so that stock
runtimes execute the file; ``LSTMNet`` and ``GRUNet`` become ONNX's own ``LSTM``
and ``GRU`` ops (not unrolled) and their readout, written here. Time and batch are symbolic (``T``, ``B``).
``streaming=True`` makes the recurrent state graph inputs and outputs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from .schema import ALIF, LI, ONNX_OPSET
from lsnn.compiler.exporter import FORMAT, IR_VERSION, export as export_module, sequence_shapes
from lsnn.reference import heldout as heldout_metric
from lsnn.reference.errors import ConfigError, MissingFileError
from lsnn.reference.modules import RecurrentNet

F = TensorProto.FLOAT
# a streaming export names its graph's state inputs and outputs as the op schema names the ports
ALIF_STATE = [(s.input, s.output) for s in ALIF.states]
(LI_STATE,) = LI.states


def _vi(name, shape):
    return helper.make_tensor_value_info(name, F, shape)


def _init(name, tensor) -> onnx.TensorProto:
    arr = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    return numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name)


class _SuiteGraph(torch.nn.Module):
    """What the file of a suite ``LSNN``/``LIFNet`` computes, under the schema's names: ``X`` to
    ``Y`` (readout) and ``Z`` (spikes); streaming adds the ALIF and LI state as inputs and outputs."""

    def __init__(self, model, streaming: bool):
        super().__init__()
        self.alif, self.readout, self.streaming = model.alif, model.readout, streaming  # the model's paths

    def forward(self, X, *state):
        Z, _, _, final = self.alif.sequence(X, state[:-1] or None)
        Y, final_y = self.readout.sequence(Z, state[-1] if state else None)
        return (Y, Z, *final, final_y) if self.streaming else (Y, Z)

    def names(self) -> tuple[list[str], list[str]]:
        if not self.streaming:
            return ["X"], ["Y", "Z"]
        return (["X"] + [i for i, _ in ALIF_STATE] + [LI_STATE.input],
                ["Y", "Z"] + [o for _, o in ALIF_STATE] + [LI_STATE.output])


def _spiking_model(model, streaming: bool, metadata: dict) -> onnx.ModelProto:
    c = model.config
    graph = _SuiteGraph(model, streaming)
    inputs, outputs = graph.names()
    X = torch.zeros(2, 2, c.n_in)
    state = [torch.zeros(2, c.n_hidden) for _ in ALIF_STATE] + [torch.zeros(2, c.n_out)] if streaming else []
    x_shape, *state_shapes = sequence_shapes(1, state_inputs=len(state))
    shapes = (x_shape, tuple(state_shapes)) if streaming else (x_shape,)  # forward(X, *state)
    return export_module(graph, (X, *state), input_names=inputs, output_names=outputs,
                         dynamic_shapes=shapes, metadata=metadata)


def onnx_weights(model):
    """The recurrent layer of a :class:`~lsnn.reference.modules.RecurrentNet` as its ONNX op takes
    it: gates in ONNX's order, ``W [1, G*H, I]``, ``R [1, G*H, H]``, ``B [1, 2*G*H]``."""
    layer, H = model.layer, model.config.n_hidden
    order = torch.cat([torch.arange(g * H, (g + 1) * H) for g in model.onnx_gates])
    W = layer.weight_ih_l0.detach()[order].unsqueeze(0)
    R = layer.weight_hh_l0.detach()[order].unsqueeze(0)
    B = torch.cat([layer.bias_ih_l0.detach()[order], layer.bias_hh_l0.detach()[order]]).unsqueeze(0)
    return W, R, B


def _recurrent_graph(model, streaming: bool) -> onnx.GraphProto:
    """The recurrent layer as one ONNX node (``model.onnx_op``, named as the layer), then the
    readout; streaming: the layer's states as ``initial_<s>`` inputs and ``final_<s>`` outputs."""
    c, name = model.config, model.kind
    H, O = c.n_hidden, c.n_out
    W, R, B = onnx_weights(model)
    inits = [_init(f"{name}.W", W), _init(f"{name}.R", R), _init(f"{name}.B", B),
             _init("readout.WT", model.readout.weight.detach().t()), _init("readout.bias", model.readout.bias),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    inputs = [_vi("X", ["T", "B", c.n_in])]
    outputs = [_vi("Y", ["T", "B", O])]
    layer_in = ["X", f"{name}.W", f"{name}.R", f"{name}.B"]
    layer_out = ["H_all"]
    if streaming:
        layer_in += ["", *(f"initial_{s}" for s in model.state_names)]
        layer_out += [f"final_{s}" for s in model.state_names]
        inputs += [_vi(f"initial_{s}", [1, "B", H]) for s in model.state_names]
        outputs += [_vi(f"final_{s}", [1, "B", H]) for s in model.state_names]
    nodes = [
        helper.make_node(model.onnx_op, layer_in, layer_out, name=name, hidden_size=H, **model.onnx_attributes),
        helper.make_node("Squeeze", ["H_all", "axis1"], ["H_seq"], name="squeeze"),
        helper.make_node("MatMul", ["H_seq", "readout.WT"], ["readout_mm"], name="readout_matmul"),
        helper.make_node("Add", ["readout_mm", "readout.bias"], ["Y"], name="readout_bias"),
    ]
    return helper.make_graph(nodes, name, inputs, outputs, inits)


def export(model, *, streaming: bool = False, metadata: dict | None = None) -> onnx.ModelProto:
    """An ONNX model of a reference ``LSNN``, ``LIFNet``, ``LSTMNet`` or ``GRUNet``; checked with
    ``onnx.checker`` (full check) and strict shape inference. The spiking ones go through
    ``torch.onnx.export`` as any user's module does (:mod:`lsnn.compiler.exporter`)."""
    meta = {"lsnn.format": FORMAT, "lsnn.kind": model.kind, "lsnn.streaming": json.dumps(streaming),
            "lsnn.module": type(model).__name__}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    if model.kind in ("lsnn", "lif"):
        return _spiking_model(model, streaming, meta)
    if not isinstance(model, RecurrentNet):
        raise ConfigError(f"cannot export a model of kind '{model.kind}'")
    opsets = [helper.make_opsetid("", ONNX_OPSET)]
    proto = helper.make_model(_recurrent_graph(model, streaming), opset_imports=opsets, producer_name="lsnn",
                              producer_version="0.1.0")
    proto.ir_version = IR_VERSION
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    return proto


def export_checkpoint(directory: str | Path, *, streaming: bool = False, heldout: int | None = None,
                      data_dir: str | None = None) -> onnx.ModelProto:
    """Export a checkpoint folder; its config and metrics go into the model's metadata, with the
    held-out metric of the module on ``heldout`` examples (default: as ``lsnn verify``; 0: none)
    that ``lsnn verify`` checks the file against (:mod:`lsnn.reference.heldout`)."""
    from lsnn.reference import checkpoint

    directory = Path(directory)
    model, config, _ = checkpoint.load(directory)
    meta = {"lsnn.config": config}
    metrics_path = directory / checkpoint.METRICS
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        meta["lsnn.metrics"] = metrics
        for key in ("accuracy", "mse"):  # the task's held-out metric
            if key in metrics:
                meta[f"lsnn.{key}"] = str(metrics[key])
    if heldout != 0:
        meta[heldout_metric.KEY] = _heldout_record(model, config, heldout, data_dir)
    return export(model, streaming=streaming, metadata=meta)


def _heldout_record(model, config: dict, examples: int | None, data_dir: str | None) -> dict:
    """The module's held-out metric, or why it could not be measured (data set not installed)."""
    from lsnn.reference.tasks import task_from_config

    if not isinstance(config.get("task"), dict):
        return {"unavailable": "the checkpoint's configuration names no task"}
    try:
        return heldout_metric.measure(model, task_from_config(config["task"], data_dir), examples).to_json()
    except MissingFileError as e:
        return {"unavailable": str(e)}


def module_outputs(model, out) -> dict[str, torch.Tensor]:
    """A reference module's forward result (:class:`~lsnn.reference.NetOutput`) under the names its
    export gives the graph outputs (a streaming export's final states included)."""
    if isinstance(model, RecurrentNet):
        return {"Y": out.Y, **{f"final_{s}": v for s, v in zip(model.state_names, model.states(out.state))}}
    final, final_y = out.state
    return {"Y": out.Y, "Z": out.Z, LI_STATE.output: final_y, **{o: s for (_, o), s in zip(ALIF_STATE, final)}}


def metadata(model: onnx.ModelProto) -> dict:
    """The ``lsnn.*`` metadata of a model, JSON values decoded."""
    out = {}
    for p in model.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except json.JSONDecodeError:
            out[p.key] = p.value
    return out
