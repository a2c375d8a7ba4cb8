"""Per-layer statistics of one reference run over a model's data, read from its ONNX graph:
the spikes of every ``ai.lsnn::ALIF`` node and the synaptic operations of every synapse layer
(:mod:`lsnn.bench.energy`), each under its node's name (for a model exported by
:func:`lsnn.compiler.export`, the module path of the layer). Nothing here knows a module class:
the weights are the graph's constants and the activity is what the run produced.

Rates are in Hz with the layer's ``dt`` from the file's ``lsnn.layers`` metadata (1 ms, the
suite's step, for a file without it); LIF neurons are those with ``beta = 0``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from .energy import SynOps, constants, graph_ops, node_label, synapse_layers

DEFAULT_DT_MS = 1.0


@dataclass(frozen=True)
class SpikingLayer:
    """An ALIF node: its name, the value holding its spikes ``Z``, which neurons are LIF, its step."""
    name: str
    spikes: str
    lif: np.ndarray
    dt: float

    def rates_hz(self, spikes_per_neuron: np.ndarray, sequences: int, steps: int) -> np.ndarray:
        return spikes_per_neuron / (sequences * steps) * 1000.0 / self.dt


def _layer_dts(proto: onnx.ModelProto) -> tuple[dict, list]:
    """The ``dt`` of each ALIF layer the metadata describes: by name, and in order."""
    from lsnn.compiler.onnx.export import metadata

    layers = metadata(proto).get("lsnn.layers")
    alifs = [layer for layer in layers if layer.get("op") == "ALIF"] if isinstance(layers, list) else []
    dts = [float(layer.get("config", {}).get("dt", DEFAULT_DT_MS)) for layer in alifs]
    return {layer.get("name"): dt for layer, dt in zip(alifs, dts)}, dts


def spiking_layers(proto: onnx.ModelProto) -> list[SpikingLayer]:
    consts = constants(proto)
    by_name, in_order = _layer_dts(proto)
    out = []
    for i, node in enumerate(proto.graph.node):
        if node.domain == "ai.lsnn" and node.op_type == "ALIF":
            name, k = node_label(node, i), len(out)
            dt = by_name.get(name, in_order[k] if k < len(in_order) else DEFAULT_DT_MS)
            beta = consts.get(node.input[3])
            lif = np.zeros(consts[node.input[1]].shape[0], bool) if beta is None else np.asarray(beta) == 0
            out.append(SpikingLayer(name, node.output[0], lif, dt))
    return out


def probed(proto: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``proto`` with ``names`` (values inside the graph) exposed as graph outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names if n not in have)
    return out


class LayerStats:
    """Accumulates a model's per-layer figures over batches: :meth:`model` is the graph to run (the
    values to observe exposed as outputs), :meth:`add` takes one batch's feeds and outputs,
    :meth:`result` gives the figures per inference."""

    def __init__(self, proto: onnx.ModelProto):
        self.synapses = synapse_layers(proto)
        self.spiking = spiking_layers(proto)
        self.constants = constants(proto)
        inputs = {i.name for i in proto.graph.input}
        wanted = [n for s in self.synapses for n in s.needs()] + [layer.spikes for layer in self.spiking]
        self.observed = [n for n in dict.fromkeys(wanted) if n not in self.constants and n not in inputs]
        self._proto = proto
        self.ops: dict[str, dict[str, SynOps]] = {}
        self.spike_sums = {layer.name: np.zeros(layer.lif.shape, np.float64) for layer in self.spiking}
        self.sequences = 0
        self.steps = 0
        self.raster = None

    def model(self) -> onnx.ModelProto:
        return probed(self._proto, self.observed)

    def add(self, values: dict[str, np.ndarray], sequences: int, steps: int) -> None:
        """One batch of ``sequences`` sequences of ``steps`` steps: ``values`` holds its feeds and
        the observed outputs."""
        values = {**self.constants, **values}
        for layer, kinds in graph_ops(self.synapses, values).items():
            mine = self.ops.setdefault(layer, {})
            for kind, ops in kinds.items():
                mine[kind] = mine.get(kind, SynOps()) + ops
        for layer in self.spiking:
            self.spike_sums[layer.name] += values[layer.spikes].sum((0, 1))
        if self.raster is None and self.spiking:  # the first layer's spikes on the first sequence
            self.raster = np.argwhere(values[self.spiking[0].spikes][:, 0] > 0).tolist()
        self.sequences += sequences
        self.steps = steps

    def result(self, e_ac_pj: float, e_mac_pj: float) -> dict:
        """Per layer and in total, per inference (per sequence): synaptic operations, energy, spikes."""
        n = max(self.sequences, 1)
        layers = {}
        for name, kinds in self.ops.items():
            syn = {k: {"acs": v.acs / n, "macs": v.macs / n} for k, v in kinds.items()}
            acs, macs = sum(v["acs"] for v in syn.values()), sum(v["macs"] for v in syn.values())
            layers[name] = {"name": name, "synapses": syn, "acs": acs, "macs": macs,
                            "energy_uj": (acs * e_ac_pj + macs * e_mac_pj) * 1e-6}
        for layer in self.spiking:
            rates = layer.rates_hz(self.spike_sums[layer.name], n, max(self.steps, 1))
            layers.setdefault(layer.name, {"name": layer.name, "synapses": {}, "acs": 0.0, "macs": 0.0,
                                           "energy_uj": 0.0}).update(
                neurons=int(rates.size), n_lif=int(layer.lif.sum()), dt_ms=layer.dt,
                spikes_per_inference=float(self.spike_sums[layer.name].sum() / n),
                firing_rate_hz=population_rates(rates, layer.lif))
        out = {"layers": list(layers.values()),
               "acs_per_inference": sum(v["acs"] for v in layers.values()),
               "macs_per_inference": sum(v["macs"] for v in layers.values())}
        out["energy_uj_per_inference"] = (out["acs_per_inference"] * e_ac_pj + out["macs_per_inference"] * e_mac_pj) * 1e-6
        if self.spiking:
            rates = np.concatenate([layer.rates_hz(self.spike_sums[layer.name], n, max(self.steps, 1))
                                    for layer in self.spiking])
            lif = np.concatenate([layer.lif for layer in self.spiking])
            out.update(firing_rate_hz=population_rates(rates, lif), rate_per_neuron_hz=rates.tolist(),
                       n_lif=int(self.spiking[0].lif.sum()), raster=self.raster)
        return out


def population_rates(rates: np.ndarray, lif: np.ndarray) -> dict:
    """Mean rate of all neurons, of the LIF ones and of the adaptive ones; ``None`` for an empty population."""
    return {"all": float(rates.mean()) if rates.size else None,
            "lif": float(rates[lif].mean()) if lif.any() else None,
            "alif": float(rates[~lif].mean()) if (~lif).any() else None}
