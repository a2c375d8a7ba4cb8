"""A bidirectional LSTM and a GRU exported by ``torch.onnx.export``: compiled for the cpu, checked
against PyTorch, and timed side by side with onnxruntime (one thread each).

    .venv/bin/python tests/recurrent_timing.py [--repeats N]

Prints, per model, the largest difference from PyTorch and the median time per run of the
compiled model and of onnxruntime, and their ratio.
"""
from __future__ import annotations

import io
import sys
import time

import numpy as np
import onnx
import torch

T_, B_, I_, H_ = 100, 8, 64, 128


def exported(kind: str, T=T_, B=B_, I=I_, H=H_, seed=0):
    """(ONNX model, PyTorch module, input): a one-layer ``nn.LSTM`` (bidirectional) or ``nn.GRU``."""
    torch.manual_seed(seed)
    net = torch.nn.LSTM(I, H, bidirectional=True) if kind == "lstm-bidirectional" else torch.nn.GRU(I, H)
    x = torch.randn(T, B, I)
    buf = io.BytesIO()
    torch.onnx.export(net, (x,), buf, input_names=["x"], output_names=["y"], dynamo=False, opset_version=14)
    return onnx.load_from_string(buf.getvalue()), net, x.numpy()


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv) -> int:
    import onnxruntime as ort

    from lsnn.compiler import compile

    repeats = int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else 20
    for kind in ("lstm-bidirectional", "gru"):
        model, net, x = exported(kind)
        with torch.no_grad():
            want = net(torch.from_numpy(x))[0].numpy()
        art = compile(model, target="cpu", threads=1)
        got = art.run({"x": x})["y"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        ours = _median_seconds(lambda: art.run({"x": x}), repeats)
        theirs = _median_seconds(lambda: sess.run(None, {"x": x}), repeats)
        print(f"{kind:20s} T={T_} B={B_} I={I_} H={H_}: max |ours - torch| {np.abs(got - want).max():.2e}; "
              f"ours {ours * 1e3:.2f} ms, onnxruntime {theirs * 1e3:.2f} ms, ours/ort {ours / theirs:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
