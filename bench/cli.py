"""The ``lsnn`` command: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


def _kv(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"lsnn: expected KEY=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_train(args) -> int:
    from lsnn.reference.train import train

    _threads(args.threads)
    metrics = train(args.task, args.model, Path(args.out), steps=args.steps, batch_size=args.batch_size,
                    lr=args.lr, seed=args.seed, data_dir=args.data_dir, resume=args.resume, reg=args.reg,
                    eval_every=args.eval_every, eval_limit=args.eval_limit,
                    model_params=_kv(args.model_param), task_params=_kv(args.task_param),
                    command=["lsnn", *args.argv], progress=not args.quiet)
    print(json.dumps({"out": args.out, **metrics}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from lsnn.reference import checkpoint
    from lsnn.reference.tasks import make_task
    from lsnn.reference.train import evaluate

    _threads(args.threads)
    rows = []
    for d in args.checkpoints:
        model, config, _ = checkpoint.load(d)
        tp = dict(config["task"])
        if args.data_dir:
            tp["data_dir"] = args.data_dir
        task = make_task(**tp)
        m = evaluate(model, task, limit=args.limit, dt=getattr(model.config, "dt", 1.0))
        rows.append({"checkpoint": str(d), "task": task.name, "model": model.kind, **m})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'checkpoint':40s} {'task':13s} {'model':6s} {'accuracy':>9s} {'rate Hz':>8s}")
        for r in rows:
            rate = r.get("firing_rate_hz", {}).get("all")
            print(f"{r['checkpoint']:40s} {r['task']:13s} {r['model']:6s} {r['accuracy']:9.4f} "
                  f"{'' if rate is None else f'{rate:8.2f}'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lsnn", description="Compile, verify and benchmark LSNNs.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a reference model on a task (BPTT, Adam)")
    t.add_argument("--task", required=True, choices=["store-recall", "smnist"])
    t.add_argument("--model", required=True, choices=["lsnn", "lif", "lstm"])
    t.add_argument("--out", required=True, help="checkpoint folder")
    t.add_argument("--data-dir", help="folder of MNIST-format IDX files (smnist; default: Fashion-MNIST)")
    t.add_argument("--steps", type=int, help="training iterations (default: per task)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--reg", type=float, default=1.0, help="firing-rate regulariser weight (target 10 Hz)")
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    t.add_argument("--eval-every", type=int, default=0, help="held-out accuracy every N steps (0: only at the end)")
    t.add_argument("--eval-limit", type=int, help="held-out examples used by --eval-every")
    t.add_argument("--model-param", action="append", metavar="KEY=VALUE", help="override a model parameter")
    t.add_argument("--task-param", action="append", metavar="KEY=VALUE", help="override a task parameter")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="held-out accuracy and firing rates of checkpoints")
    e.add_argument("checkpoints", nargs="+")
    e.add_argument("--data-dir")
    e.add_argument("--limit", type=int, help="use at most this many held-out examples")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"lsnn {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lsnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
