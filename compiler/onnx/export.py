"""Export of the reference models to ONNX.

``LSNN`` and ``LIFNet`` become one ``ai.lsnn::ALIF`` node and one
``ai.lsnn::LI`` node, with their function bodies attached so that stock
runtimes execute the file; ``LSTMNet`` becomes ONNX's own ``LSTM`` op (not
unrolled) and its readout. Time and batch are symbolic (``T``, ``B``).
``streaming=True`` makes the recurrent state graph inputs and outputs.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from .functions import attach
from .schema import ALIF, DOMAIN, LI, ONNX_OPSET, VERSION
from lsnn.reference import heldout as heldout_metric
from lsnn.reference.errors import ConfigError, MissingFileError

F = TensorProto.FLOAT
FORMAT = "lsnn-onnx/1"
# a streaming export names its graph's state inputs and outputs as the op schema names the ports
ALIF_STATE = [(s.input, s.output) for s in ALIF.states]
(LI_STATE,) = LI.states


def _at_ports(ports, names: dict) -> list[str]:
    """The node's input or output list: each name at its port's place, "" where none, no trailing ""."""
    out = [names.get(p.name, "") for p in ports]
    while out and not out[-1]:
        out.pop()
    return out


def _vi(name, shape):
    return helper.make_tensor_value_info(name, F, shape)


def _init(name, tensor) -> onnx.TensorProto:
    arr = tensor.detach().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    return numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name)


def _spiking_graph(model, streaming: bool) -> onnx.GraphProto:
    c = model.config
    H, O = c.n_hidden, c.n_out
    inputs = [_vi("X", ["T", "B", c.n_in])]
    outputs = [_vi("Y", ["T", "B", O]), _vi("Z", ["T", "B", H])]
    inits = [_init("alif.W", model.W), _init("alif.R", model.R), _init("alif.beta", model.beta),
             _init("alif.alpha", model.alpha), _init("alif.rho", model.rho),
             _init("readout.W", model.W_out), _init("readout.alpha", model.alpha_out),
             _init("readout.bias", model.b_out)]
    alif_in = ["X", "alif.W", "alif.R", "alif.beta", "alif.alpha", "alif.rho"]
    alif_out = ["Z"]
    li_in = ["Z", "readout.W", "readout.alpha", "readout.bias"]
    li_out = ["Y"]
    if streaming:
        alif_in += [i for i, _ in ALIF_STATE]
        alif_out = _at_ports(ALIF.outputs, {"Z": "Z", **{o: o for _, o in ALIF_STATE}})
        li_in.append(LI_STATE.input)
        li_out.append(LI_STATE.output)
        inputs += [_vi(i, ["B", H]) for i, _ in ALIF_STATE] + [_vi(LI_STATE.input, ["B", O])]
        outputs += [_vi(o, ["B", H]) for _, o in ALIF_STATE] + [_vi(LI_STATE.output, ["B", O])]
    nodes = [
        helper.make_node("ALIF", alif_in, alif_out, name="alif", domain=DOMAIN,
                         thr=float(c.thr), n_refractory=int(c.n_refractory)),
        helper.make_node("LI", li_in, li_out, name="readout", domain=DOMAIN),
    ]
    return helper.make_graph(nodes, f"{model.kind}", inputs, outputs, inits)


def lstm_onnx_weights(lstm: torch.nn.LSTM):
    """torch's gate order (i, f, g, o) to ONNX's (i, o, f, c), as ``W [1,4H,I]``, ``R [1,4H,H]``, ``B [1,8H]``."""
    H = lstm.hidden_size
    order = torch.cat([torch.arange(0, H), torch.arange(3 * H, 4 * H), torch.arange(H, 2 * H),
                       torch.arange(2 * H, 3 * H)])
    W = lstm.weight_ih_l0.detach()[order].unsqueeze(0)
    R = lstm.weight_hh_l0.detach()[order].unsqueeze(0)
    B = torch.cat([lstm.bias_ih_l0.detach()[order], lstm.bias_hh_l0.detach()[order]]).unsqueeze(0)
    return W, R, B


def _lstm_graph(model, streaming: bool) -> onnx.GraphProto:
    c = model.config
    H, O = c.n_hidden, c.n_out
    W, R, B = lstm_onnx_weights(model.lstm)
    inits = [_init("lstm.W", W), _init("lstm.R", R), _init("lstm.B", B),
             _init("readout.WT", model.readout.weight.detach().t()), _init("readout.bias", model.readout.bias),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    inputs = [_vi("X", ["T", "B", c.n_in])]
    outputs = [_vi("Y", ["T", "B", O])]
    lstm_in = ["X", "lstm.W", "lstm.R", "lstm.B"]
    lstm_out = ["H_all"]
    if streaming:
        lstm_in += ["", "initial_h", "initial_c"]
        lstm_out += ["final_h", "final_c"]
        inputs += [_vi("initial_h", [1, "B", H]), _vi("initial_c", [1, "B", H])]
        outputs += [_vi("final_h", [1, "B", H]), _vi("final_c", [1, "B", H])]
    nodes = [
        helper.make_node("LSTM", lstm_in, lstm_out, name="lstm", hidden_size=H),
        helper.make_node("Squeeze", ["H_all", "axis1"], ["H_seq"], name="squeeze"),
        helper.make_node("MatMul", ["H_seq", "readout.WT"], ["readout_mm"], name="readout_matmul"),
        helper.make_node("Add", ["readout_mm", "readout.bias"], ["Y"], name="readout_bias"),
    ]
    return helper.make_graph(nodes, "lstm", inputs, outputs, inits)


def export(model, *, streaming: bool = False, metadata: dict | None = None) -> onnx.ModelProto:
    """An ONNX model of a reference ``LSNN``, ``LIFNet`` or ``LSTMNet``; checked with
    ``onnx.checker`` (full check) and strict shape inference."""
    if model.kind in ("lsnn", "lif"):
        graph = _spiking_graph(model, streaming)
    elif model.kind == "lstm":
        graph = _lstm_graph(model, streaming)
    else:
        raise ConfigError(f"cannot export a model of kind '{model.kind}'")
    opsets = [helper.make_opsetid("", ONNX_OPSET)]
    if model.kind != "lstm":
        opsets.append(helper.make_opsetid(DOMAIN, VERSION))
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="lsnn", producer_version="0.1.0")
    proto.ir_version = 10  # what onnxruntime 1.32 and onnx 1.23 both read
    meta = {"lsnn.format": FORMAT, "lsnn.kind": model.kind, "lsnn.streaming": json.dumps(streaming)}
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    helper.set_model_props(proto, meta)
    proto = attach(proto)
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
    if model.kind == "lstm":
        h, c = out.state
        return {"Y": out.Y, "final_h": h, "final_c": c}
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
