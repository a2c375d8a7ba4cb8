"""The ``lsnn`` command: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from lsnn.reference.errors import ConfigError, LsnnError
from lsnn.reference.files import LABELS, atomic_write, check_destination, check_file_destination, read_npz


def _threads(n: int) -> None:
    """Threads of the native libraries (OpenMP, TVM); torch-free, so running an artifact stays so."""
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("TVM_NUM_THREADS", str(n))


def _torch_threads(n: int) -> None:
    """:func:`_threads`, and PyTorch's, for the commands that compute with it."""
    import torch

    _threads(n)
    torch.set_num_threads(n)


def _number(kind, least: float, strict: bool, what: str):
    """An argparse type: a finite ``kind`` above ``least`` (``strict``) or at least ``least``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if not math.isfinite(value) or value < least or strict and value == least:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


positive_int = _number(int, 0, True, "a positive integer")
non_negative_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a positive number")
non_negative_float = _number(float, 0.0, False, "a number >= 0")


def _refuse_overwrite(output: str | Path, others: dict[str, str | Path]) -> None:
    """Raise :class:`ConfigError` when ``output`` is one of the files ``others`` (by any spelling)."""
    out = Path(output)
    for what, other in others.items():
        other = Path(other)
        same = out.resolve() == other.resolve() or out.exists() and other.exists() and os.path.samefile(out, other)
        if same:
            raise ConfigError(f"{output} is {what} ({other}); name another file to write")


def _kv(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"expected KEY=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_train(args) -> int:
    from lsnn.reference import distributed
    from lsnn.reference.train import train

    if args.threads or not distributed.under_torchrun():  # torchrun's processes keep its OMP_NUM_THREADS
        _torch_threads(args.threads or 1)
    metrics = train(args.task, args.model, Path(args.out), steps=args.steps, batch_size=args.batch_size,
                    lr=args.lr, seed=args.seed, data_dir=args.data_dir, resume=args.resume, reg=args.reg,
                    eval_every=args.eval_every, eval_limit=args.eval_limit,
                    model_params=_kv(args.model_param), task_params=_kv(args.task_param),
                    command=["lsnn", *args.argv], progress=not args.quiet)
    if distributed.is_main_process():
        print(json.dumps({"out": args.out, **metrics}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from lsnn.reference.train import evaluate

    _torch_threads(args.threads)
    rows = [_evaluate_row(d, args.data_dir, args.limit, evaluate) for d in args.checkpoints]
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    return 0


def _evaluate_row(directory: str, data_dir: str | None, limit: int | None, evaluate) -> dict:
    from lsnn.reference import checkpoint
    from lsnn.reference.tasks import task_from_config

    model, config, _ = checkpoint.load(directory)
    task = task_from_config(config["task"], data_dir)
    m = evaluate(model, task, limit=limit)
    return {"checkpoint": str(directory), "task": task.name, "model": model.kind, "metric": task.metric, **m}


def _table(rows: list[dict]) -> str:
    lines = [f"{'checkpoint':40s} {'task':14s} {'model':6s} {'metric':>8s} {'value':>9s} {'rate Hz':>8s}"]
    for r in rows:
        rate = r.get("firing_rate_hz", {}).get("all")
        lines.append(f"{r['checkpoint']:40s} {r['task']:14s} {r['model']:6s} {r['metric']:>8s} "
                     f"{r[r['metric']]:9.4f} {'' if rate is None else f'{rate:8.2f}'}")
    return "\n".join(lines)


def cmd_export(args) -> int:
    from lsnn.compiler.onnx.export import export_checkpoint
    from lsnn.reference.checkpoint import CHECKPOINT, CONFIG

    check_file_destination(args.output, "ONNX file")
    _refuse_overwrite(args.output, {"the checkpoint": Path(args.checkpoint) / CHECKPOINT,
                                    "the checkpoint's configuration": Path(args.checkpoint) / CONFIG})
    model = export_checkpoint(args.checkpoint, streaming=args.streaming, heldout=args.heldout, data_dir=args.data_dir)
    atomic_write(Path(args.output), lambda f: f.write(model.SerializeToString()))
    kinds = sorted({f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in model.graph.node})
    print(f"wrote {args.output} ({', '.join(kinds)}{', streaming' if args.streaming else ''})")
    return 0


def cmd_run(args) -> int:
    import numpy as np

    from lsnn.targets import open_runtime

    _threads(args.threads)
    check_file_destination(args.outputs, "outputs")
    _refuse_overwrite(args.outputs, {"the --inputs file": args.inputs, "the model": args.model})
    inputs = read_npz(args.inputs)
    if Path(args.model).is_dir():  # a compiled artifact: load, do not recompile (and without PyTorch)
        from lsnn.targets import load
        from lsnn.targets.tvm_runtime import import_tvm

        import_tvm()
        rt = load(args.model)
    else:
        rt = open_runtime(args.model, args.runtime, args.threads)
    outputs = rt.run(inputs)
    atomic_write(Path(args.outputs), lambda f: np.savez(f, **outputs))
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
    print(f"wrote {args.outputs}: {shapes}")
    return 0


def cmd_compile(args) -> int:
    from lsnn.compiler import compile

    _threads(1)
    check_destination(args.output, "compiled artifact")  # before the compile, not after it
    options = _kv(args.option)
    if args.arch:
        options["arch"] = args.arch
    print(f"compiling {args.model} for {args.target} ...", file=sys.stderr)
    artifact = compile(args.model, args.target, **options)
    out = artifact.save(args.output)
    m = artifact.manifest
    print(f"wrote {out}: {json.dumps(m['target']['tvm_target'])}, compiled in {m['compile_seconds']:.1f} s")
    if m.get("footprint"):  # a microcontroller project
        print(_footprint(m["footprint"], out))
    return 0


def _footprint(fp: dict, out: Path) -> str:
    lines = [f"  model: flash {fp['model']['flash_bytes']} B, RAM {fp['model']['ram_bytes']} B, "
             f"stack {fp['stack_bytes_model']} B; ELF with harness: flash {fp['elf']['flash_bytes']} B, "
             f"RAM {fp['elf']['ram_bytes']} B"]
    ips = fp.get("instructions_per_step")
    if ips:
        lines.append(f"  {ips['value']} instructions per step ({ips['input']}; {ips['counted_by']})")
    lines.append(f"  run it: lsnn run {out} --inputs in.npz --outputs out.npz   (or: make -C {out} run)")
    return "\n".join(lines)


def cmd_verify(args) -> int:
    from lsnn.targets.verify import format_report, verify

    if args.module:
        return _verify_module(args)
    if args.inputs:
        raise ConfigError("--inputs goes with --module (a checkpoint is verified on its task's and random data)")
    _threads(args.threads)
    report = verify(args.model, args.target or args.runtime, reference=args.reference, task=args.task,
                    data_dir=args.data_dir, limit=args.limit, threads=args.threads, progress=not args.json)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["passed"] else 1


def _verify_module(args) -> int:
    """``lsnn verify MODEL --module pkg.mod:factory``: MODEL against the user's own module."""
    from lsnn.targets.verify_module import module_from_factory, verify

    for option in ("reference", "task", "data_dir", "limit"):
        if getattr(args, option) is not None:
            raise ConfigError(f"--{option.replace('_', '-')} is for the suite's checkpoints; "
                              f"--module verifies on --inputs (or random inputs) alone")
    _torch_threads(args.threads)
    module = module_from_factory(args.module)
    arrays = read_npz(args.inputs) if args.inputs else None
    if arrays is not None:
        arrays.pop(LABELS, None)  # the file lsnn bench takes may hold labels: parity needs none
    inputs = next(iter(arrays.values())) if arrays is not None and len(arrays) == 1 else arrays
    report = verify(module, args.model, inputs, runtime=args.target or args.runtime, threads=args.threads)
    print(json.dumps(report.data, indent=2) if args.json else report)
    return 0 if report.passed else 1


def cmd_bench(args) -> int:
    from lsnn.bench.harness import load_config, models_config, run_bench
    from lsnn.bench.baseline import load as load_baseline
    from lsnn.bench.report import write

    cfg = load_config(args.config, args.quick)
    if args.model:
        cfg = models_config(cfg, args.model, task=args.task, inputs=args.inputs, targets=args.targets)
    elif args.task or args.inputs or args.targets:
        raise ConfigError("--task, --inputs and --targets go with --model FILE.onnx (checkpoints bring their "
                          "own task; a --config file names their runtimes)")
    if args.batch_sizes:
        cfg["batch_sizes"] = args.batch_sizes
    if args.data_dir:
        cfg["data_dir"] = args.data_dir
    baseline = (Path(args.baseline), load_baseline(args.baseline)) if args.baseline else None  # before the bench
    check_destination(args.out, "bench report")  # before the bench, not after it
    _threads(cfg["threads"])
    results = run_bench(cfg, Path(args.out), progress=True)
    out = write(results, Path(args.out), baseline)
    print(f"report: {out / 'report.html'} (and report.md, results.json)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lsnn", description="Compile, verify and benchmark LSNNs.")
    sub = p.add_subparsers(dest="command", required=True)

    _train_parser(sub)
    _evaluate_parser(sub)
    _export_parser(sub)
    _compile_parser(sub)
    _run_parser(sub)

    v = sub.add_parser("verify", help="parity of a runtime with the reference, on held-out and random data")
    v.add_argument("model", help="ONNX file, or a checkpoint folder: exported, and compared with its PyTorch module "
                                 "(with --module: an ONNX file or a compiled artifact folder)")
    v.add_argument("--reference", metavar="CHECKPOINT",
                   help="compare with this checkpoint's PyTorch module (default: MODEL's own checkpoint; for an "
                        "ONNX file, its own interpretation and the held-out metric recorded at export)")
    v.add_argument("--runtime", default="ort", choices=["ort", "torch"])
    v.add_argument("--target", help="compile for this target (e.g. cpu) and verify the compiled model")
    v.add_argument("--task", choices=["store-recall", "smnist", "l2l-regression"], help="default: the task in the model's metadata")
    v.add_argument("--data-dir")
    v.add_argument("--limit", type=positive_int, help="held-out examples (default: those of the metric recorded at export, "
                                             "else 64; 256 for smnist)")
    v.add_argument("--module", metavar="PKG.MOD:FACTORY",
                   help="compare with your own PyTorch module: FACTORY() returns it (e.g. with its weights loaded); "
                        "per ALIF layer, on --inputs")
    v.add_argument("--inputs", metavar="NPZ", help="with --module: the inputs, one array or arrays named as MODEL's "
                                                   "inputs (default: random currents of MODEL's input shape)")
    v.add_argument("--threads", type=positive_int, default=1)
    v.add_argument("--json", action="store_true", help="the report as JSON")
    v.set_defaults(func=cmd_verify)

    _bench_parser(sub)
    return p


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a reference model on a task (BPTT, Adam)")
    t.add_argument("--task", required=True, choices=["store-recall", "smnist", "l2l-regression"])
    t.add_argument("--model", required=True,
                   help="the model's kind, a key of lsnn.reference.MODELS (an unknown one is refused with the list)")
    t.add_argument("--out", required=True, help="checkpoint folder")
    t.add_argument("--data-dir", help="folder of MNIST-format IDX files (smnist; default: Fashion-MNIST)")
    t.add_argument("--steps", type=positive_int, help="training iterations (default: per task)")
    t.add_argument("--batch-size", type=positive_int)
    t.add_argument("--lr", type=positive_float)
    t.add_argument("--seed", type=non_negative_int, default=0)
    t.add_argument("--reg", type=non_negative_float, default=None,
                   help="firing-rate regulariser weight (target 10 Hz; default: per task, else 1)")
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    t.add_argument("--eval-every", type=non_negative_int, default=0,
                   help="held-out accuracy every N steps (0: only at the end)")
    t.add_argument("--eval-limit", type=positive_int, help="held-out examples used by --eval-every")
    t.add_argument("--model-param", action="append", metavar="KEY=VALUE", help="override a model parameter")
    t.add_argument("--task-param", action="append", metavar="KEY=VALUE", help="override a task parameter")
    t.add_argument("--threads", type=positive_int,
                   help="threads of this process (default: 1; under torchrun, its OMP_NUM_THREADS)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)


def _evaluate_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="held-out accuracy and firing rates of checkpoints")
    e.add_argument("checkpoints", nargs="+")
    e.add_argument("--data-dir")
    e.add_argument("--limit", type=positive_int, help="use at most this many held-out examples")
    e.add_argument("--threads", type=positive_int, default=1)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)


def _export_parser(sub) -> None:
    x = sub.add_parser("export", help="export a checkpoint to ONNX (ai.lsnn ops with function bodies)")
    x.add_argument("checkpoint", help="checkpoint folder")
    x.add_argument("-o", "--output", required=True, help="ONNX file to write")
    x.add_argument("--streaming", action="store_true", help="recurrent state as graph inputs and outputs")
    x.add_argument("--heldout", type=non_negative_int, help="held-out examples whose metric is recorded for "
                   "lsnn verify (default: verify's, 64; 256 for smnist; 0: record none)")
    x.add_argument("--data-dir", help="folder of MNIST-format IDX files for the held-out metric (smnist)")
    x.set_defaults(func=cmd_export)


def _compile_parser(sub) -> None:
    c = sub.add_parser("compile", help="compile an ONNX model with TVM into a self-contained artifact folder")
    c.add_argument("model", help="ONNX file")
    c.add_argument("--target", default="cpu", help="compile target (default: cpu)")
    c.add_argument("-o", "--output", required=True,
                   help="artifact folder to write (a new or empty folder, or one lsnn wrote)")
    c.add_argument("--option", action="append", metavar="KEY=VALUE", help="target option, e.g. mcpu=skylake")
    c.add_argument("--arch", help="GPU architecture for --target cuda: sm_90 (default) or sm_80")
    c.set_defaults(func=cmd_compile)


def _run_parser(sub) -> None:
    r = sub.add_parser("run", help="run a model or compiled artifact on named arrays (.npz in, .npz out)")
    r.add_argument("model", help="ONNX file, or an artifact folder from lsnn compile")
    r.add_argument("--inputs", required=True, help=".npz with one array per graph input")
    r.add_argument("--outputs", required=True, help=".npz to write (not the --inputs file)")
    r.add_argument("--runtime", default="ort", choices=["ort", "torch"])
    r.add_argument("--threads", type=positive_int, default=1)
    r.set_defaults(func=cmd_run)


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="accuracy, latency, memory and energy of the models on every runtime")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--config", help="JSON file overriding the full configuration")
    g.add_argument("--quick", action="store_true", help="the quick configuration (what CI runs)")
    b.add_argument("--model", action="append", metavar="FILE.onnx",
                   help="bench this ONNX file (repeat for several) instead of the configuration's checkpoints")
    b.add_argument("--task", help="the --model files' data: this task's held-out set (accuracy when its classes "
                                  "are the model's outputs)")
    b.add_argument("--inputs", metavar="FILE.npz", help="the --model files' data: one array [T, B, I] or one per "
                                                        "model input, and optional integer 'labels' [B]")
    b.add_argument("--targets", type=_names, help="comma-separated runtimes and targets besides onnxruntime "
                                                  "(default: cpu; e.g. cpu,cortex-m4,torch)")
    b.add_argument("--batch-sizes", type=_positive_ints, help="comma-separated batch sizes timed (e.g. 1,8)")
    b.add_argument("--data-dir", help="folder of MNIST-format IDX files (smnist)")
    b.add_argument("--out", required=True, help="report folder (a new or empty folder, or one lsnn wrote)")
    b.add_argument("--baseline", metavar="OLD/results.json",
                   help="an earlier run's results: every figure shown beside it, regressions beyond noise flagged")
    b.set_defaults(func=cmd_bench)


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got '{text}'")
    return names


def _positive_ints(text: str) -> list[int]:
    return [positive_int(t) for t in _names(text)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except LsnnError as e:  # what the suite expects to go wrong; anything else keeps its traceback
        print(f"lsnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
