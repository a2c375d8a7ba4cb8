"""Training by BPTT with Adam, held-out evaluation, resumable checkpoints."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint
from .modules import build_model, model_config
from .regularizers import firing_rate_loss, firing_rates_hz
from .tasks import make_task
from .errors import ConfigError, MissingFileError, OutputError

# Per-task defaults: model sizes and training hyperparameters (override on the command line).
DEFAULTS = {
    "store-recall": {
        "model": {"lsnn": {"n_lif": 50, "n_alif": 50, "tau_a": 2000.0},
                  "lif": {"n_lif": 50, "n_alif": 50, "tau_a": 2000.0},
                  "lstm": {"n_hidden": 64}},
        "steps": 650, "batch_size": 64, "lr": 0.005,
    },
    "smnist": {
        "model": {"lsnn": {}, "lif": {}, "lstm": {"n_hidden": 128}},
        "steps": 1500, "batch_size": 64, "lr": 0.005,
    },
    "l2l-regression": {
        "model": {"lsnn": {"n_lif": 100, "n_alif": 100, "tau_a": 500.0},
                  "lif": {"n_lif": 200, "n_alif": 0},
                  "lstm": {"n_hidden": 64}},
        "steps": 3000, "batch_size": 32, "lr": 0.003,
    },
}


def evaluate(model, task, batch_size: int = 256, limit: int | None = None, dt: float = 1.0) -> dict:
    """The held-out metric (accuracy, or MSE for regression, with its learning curve per trial
    for learning-to-learn) and, for spiking models, firing rates (Hz) per population."""
    correct = total = 0
    rate_sum, n_batches = None, 0
    curve = None
    with torch.no_grad():
        for X, target in task.heldout(batch_size, limit):
            out = model(X)
            c, n = task.score(out.Y, target)
            correct, total = correct + c, total + n
            if hasattr(task, "curve"):
                k = task.curve(out.Y.numpy(), target.numpy())
                curve = k if curve is None else curve + k
            if out.Z is not None:
                r = firing_rates_hz(out.Z, dt) * X.shape[1]
                rate_sum = r if rate_sum is None else rate_sum + r
                n_batches += X.shape[1]
    metrics = {task.metric: correct / max(total, 1), "decisions": total}
    if curve is not None:
        episodes = total // task.n_trials
        metrics["mse_per_trial"] = [round(float(v), 5) for v in curve / max(episodes, 1)]
        metrics["linear_baseline_mse_per_trial"] = [round(float(v), 5) for v in _linear_baseline(task, limit)]
    if rate_sum is not None:
        rates = rate_sum / n_batches
        c = model.config
        metrics["firing_rate_hz"] = {
            "all": float(rates.mean()),
            "lif": float(rates[:c.n_lif].mean()) if c.n_lif else None,
            "alif": float(rates[c.n_lif:].mean()) if c.n_alif else None,
        }
    return metrics


def _linear_baseline(task, limit: int | None) -> np.ndarray:
    """Mean squared error per trial of the per-episode optimal linear predictor, same episodes."""
    from .tasks import linear_baseline

    _, _, x, y = task.heldout_episodes(limit)
    return linear_baseline(x, y).mean(0)


def train(task_name: str, kind: str, out: Path, *, steps: int | None = None, batch_size: int | None = None,
          lr: float | None = None, seed: int = 0, data_dir: str | None = None, resume: bool = False,
          reg: float = 1.0, target_rate_hz: float = 10.0, clip: float = 1.0, eval_every: int = 0,
          eval_limit: int | None = None, model_params: dict | None = None, task_params: dict | None = None,
          command: list[str] | None = None, progress: bool = True) -> dict:
    out = Path(out)
    defaults = DEFAULTS.get(task_name, {})
    if resume:
        if not (out / checkpoint.CONFIG).is_file():
            raise MissingFileError(f"--resume: no checkpoint in {out}")
        config = json.loads((out / checkpoint.CONFIG).read_text())
        if config["task"]["name"] != task_name or config["model"]["kind"] != kind:
            raise ConfigError(f"--resume: {out} holds a {config['model']['kind']} model for "
                             f"{config['task']['name']}, not {kind} for {task_name}")
        tp = dict(config["task"])
        if data_dir:
            tp["data_dir"] = data_dir
        task = make_task(**tp)
        model, _, state = checkpoint.load(out)
        model.train()
        hp = config["training"]
        if steps is not None:
            hp["steps"] = steps
    else:
        if (out / checkpoint.CHECKPOINT).exists():
            raise OutputError(f"{out} already holds a checkpoint; continue it with --resume or choose "
                                  f"another --out")
        tp = dict(task_params or {})
        if data_dir is not None:
            tp["data_dir"] = data_dir
        task = make_task(task_name, **tp)
        hp = {"steps": steps or defaults.get("steps", 1000), "batch_size": batch_size or defaults.get("batch_size", 64),
              "lr": lr or defaults.get("lr", 0.01), "seed": seed, "reg": reg, "target_rate_hz": target_rate_hz,
              "clip": clip, "optimizer": "adam", "lr_schedule": "cosine"}
        mp = {"n_in": task.n_in, "n_out": task.n_out, **defaults.get("model", {}).get(kind, {}), **(model_params or {})}
        torch.manual_seed(seed)
        model = build_model(kind, **mp)
        state = None
        config = {"task": task.config(), "model": model_config(model), "training": hp}
    run = {"command": command or sys.argv, "git_commit": checkpoint.git_commit()}
    if resume:  # keep how the run began; record each continuation
        config.setdefault("resumed", []).append(run)
    else:
        config.update(run)
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"])

    def set_lr(step):  # cosine decay to zero: the last weights are the settled ones
        scale = 0.5 * (1 + math.cos(math.pi * step / hp["steps"])) if hp.get("lr_schedule") == "cosine" else 1.0
        for group in opt.param_groups:
            group["lr"] = hp["lr"] * scale
    start = 0
    rng = np.random.default_rng(hp["seed"])
    log_path = out / "train_log.jsonl"
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
    dt = model.config.dt if hasattr(model.config, "dt") else 1.0
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        log_path.unlink(missing_ok=True)

    def save(step, rngs=None):
        np_state, torch_state = rngs or (rng.bit_generator.state, torch.get_rng_state())
        checkpoint.save(out, model, opt, step, config,
                        {"rng": np_state, "torch_rng": torch_state,
                         "train_seconds": seconds_before + time.monotonic() - began})

    bar = tqdm(range(start, hp["steps"]), initial=start, total=hp["steps"], desc=f"{kind} {task_name}",
               disable=not progress, dynamic_ncols=True)
    ema_loss = ema_acc = None
    last_save = began = time.monotonic()
    seconds_before = state.get("train_seconds", 0.0) if state is not None else 0.0
    done = start

    def _train_step(step):
        nonlocal ema_loss, ema_acc
        set_lr(step)
        X, target = task.batch(hp["batch_size"], rng)
        out_ = model(X)
        loss = task.loss(out_.Y, target)
        total = loss
        if out_.Z is not None and hp["reg"]:
            total = total + hp["reg"] * firing_rate_loss(out_.Z, hp["target_rate_hz"], dt)
        opt.zero_grad(set_to_none=True)
        total.backward()
        if hp["clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), hp["clip"])
        opt.step()
        c, n = task.score(out_.Y.detach(), target)
        acc = c / max(n, 1)
        ema_loss = loss.item() if ema_loss is None else 0.9 * ema_loss + 0.1 * loss.item()
        ema_acc = acc if ema_acc is None else 0.9 * ema_acc + 0.1 * acc
        rec = {"step": step + 1, "loss": round(loss.item(), 5), task.metric: round(acc, 4)}
        if out_.Z is not None:
            rec["rate_hz"] = round(float(out_.Z.detach().mean()) * 1000 / dt, 2)
        if eval_every and (step + 1) % eval_every == 0:
            model.eval()
            rec[f"heldout_{task.metric}"] = evaluate(model, task, limit=eval_limit, dt=dt)[task.metric]
            model.train()
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        bar.set_postfix(loss=f"{ema_loss:.3f}", **{task.metric[:3]: f"{ema_acc:.3f}"}, **({"Hz": rec["rate_hz"]} if "rate_hz" in rec else {}))

    try:
        for step in bar:
            rngs = (rng.bit_generator.state, torch.get_rng_state())  # to redo this step after an interrupt
            done = step
            _train_step(step)
            done = step + 1
            if step + 1 == hp["steps"] or time.monotonic() - last_save > 60:
                save(step + 1)
                last_save = time.monotonic()
    except KeyboardInterrupt:
        if done > start:  # keep what was learnt; --resume continues exactly here
            save(done, None if done == step + 1 else rngs)
            print(f"\ninterrupted: checkpoint of step {done} saved in {out}; continue with --resume",
                  file=sys.stderr)
        raise
    bar.close()
    if start >= hp["steps"]:
        save(start)
    seconds = seconds_before + time.monotonic() - began
    model.eval()
    metrics = evaluate(model, task, dt=dt)
    metrics["steps"] = hp["steps"]
    metrics["train_seconds"] = round(seconds, 1)
    metrics["threads"] = torch.get_num_threads()
    if not math.isfinite(metrics[task.metric]):
        raise RuntimeError(f"evaluation produced a non-finite {task.metric}")
    checkpoint.write_json(out / checkpoint.METRICS, metrics)
    return metrics
