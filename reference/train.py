"""Training by BPTT with Adam, held-out evaluation, resumable checkpoints; on one process or
data-parallel on several under ``torchrun`` (see :mod:`.distributed`): the same global batch,
the same gradients, the same files (written by rank 0)."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint, distributed
from .errors import ConfigError, MissingFileError, OutputError
from .files import atomic_write, check_file_destination, read_json
from .modules import RecurrentNet, build_model, model_class, model_config
from .regularizers import firing_rates, firing_rates_hz, population_rates_hz, rate_loss
from .tasks import Task, make_task, task_from_config

LOG = "train_log.jsonl"
SAVE_EVERY_S = 60.0  # a checkpoint at least this often (and at the end, and on Ctrl-C)

# Per-task defaults: model sizes and training hyperparameters (override on the command line);
# "recurrent" sizes every recurrent baseline (LSTM, GRU: the same number of units).
DEFAULTS = {
    "store-recall": {
        "model": {"lsnn": {"n_lif": 50, "n_alif": 50, "tau_a": 2000.0},
                  "lif": {"n_lif": 50, "n_alif": 50, "tau_a": 2000.0},
                  "recurrent": {"n_hidden": 64}},
        "steps": 650, "batch_size": 64, "lr": 0.005,
    },
    "smnist": {
        "model": {"lsnn": {}, "lif": {}, "recurrent": {"n_hidden": 128}},
        "steps": 1500, "batch_size": 64, "lr": 0.005,
    },
    "l2l-regression": {
        "model": {"lsnn": {"n_lif": 100, "n_alif": 200, "tau_a": 500.0, "tau_out": 5.0},
                  "lif": {"n_lif": 300, "n_alif": 0, "tau_out": 5.0},
                  "recurrent": {"n_hidden": 64}},
        "steps": 20000, "batch_size": 32, "lr": 0.003, "reg": 0.1,
    },
}


def evaluate(model, task: Task, batch_size: int = 256, limit: int | None = None, dt: float | None = None) -> dict:
    """The held-out metric (accuracy, or MSE for regression, with its learning curve per trial
    for learning-to-learn) and, for spiking models, firing rates (Hz) per population."""
    dt = model.config.dt if dt is None else dt
    correct = total = 0
    rate_sum, n_seq = None, 0
    curve = None
    with torch.no_grad():
        for X, target in task.heldout(batch_size, limit):
            out = model(X)
            c, n = task.score(out.Y, target)
            correct, total = correct + c, total + n
            k = task.curve(out.Y.numpy(), target.numpy())
            if k is not None:
                curve = k if curve is None else curve + k
            if out.Z is not None:
                r = firing_rates_hz(out.Z, dt) * X.shape[1]
                rate_sum = r if rate_sum is None else rate_sum + r
                n_seq += X.shape[1]
    metrics = {task.metric: correct / max(total, 1), "decisions": total}
    if curve is not None:
        metrics.update(task.curve_metrics(curve, total, limit))
    if rate_sum is not None:
        metrics["firing_rate_hz"] = population_rates_hz(rate_sum / n_seq, model.config)
    return metrics


class TrainLog:
    """``train_log.jsonl``: one line per training step, each step once (a resumed run first drops
    what was logged after its checkpoint)."""

    def __init__(self, path: Path):
        self.path = path

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def keep_until(self, step: int) -> None:
        """Drop the lines of steps after ``step`` (and any half-written line), atomically."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if _logged_step(line) <= step]
        atomic_write(self.path, lambda f: f.write("".join(line + "\n" for line in kept).encode()))

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _logged_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf  # a line cut short by a kill: never kept


def _resume(out: Path, task_name: str, kind: str, steps: int | None, data_dir: str | None):
    """``(task, model, config, state)`` of the checkpoint in ``out``."""
    cfg_path = out / checkpoint.CONFIG
    if not cfg_path.is_file():
        raise MissingFileError(f"--resume: no checkpoint in {out}")
    config = read_json(cfg_path, checkpoint.CheckpointError, "checkpoint configuration")
    if not all(isinstance(config.get(k) if isinstance(config, dict) else None, dict) for k in ("task", "model")):
        raise checkpoint.CheckpointError(f"{cfg_path}: no 'task' and 'model' sections (not a checkpoint configuration)")
    was = (config["task"].get("name"), config["model"].get("kind"))
    if was != (task_name, kind):
        raise ConfigError(f"--resume: {out} holds a {was[1]} model for {was[0]}, not {kind} for {task_name}")
    task = task_from_config(config["task"], data_dir)
    model, _, state = checkpoint.load(out)
    if steps is not None:
        config["training"]["steps"] = steps
    return task, model, config, state


def _new(out: Path, task_name: str, kind: str, hp: dict, data_dir: str | None, model_params: dict | None,
         task_params: dict | None):
    """``(task, model, config)`` of a fresh run."""
    if (out / checkpoint.CHECKPOINT).exists():
        raise OutputError(f"{out} already holds a checkpoint; continue it with --resume or choose another --out")
    task = make_task(task_name, data_dir=data_dir, **(task_params or {}))
    defaults = model_defaults(task_name, kind)
    torch.manual_seed(hp["seed"])
    model = build_model(kind, **{"n_in": task.n_in, "n_out": task.n_out, **defaults, **(model_params or {})})
    return task, model, {"task": task.config(), "model": model_config(model), "training": hp}


def model_defaults(task_name: str, kind: str) -> dict:
    """The task's default parameters of a ``kind`` model (``recurrent``'s for a recurrent baseline)."""
    of = DEFAULTS.get(task_name, {}).get("model", {})
    if kind in of:
        return of[kind]
    return of.get("recurrent", {}) if issubclass(model_class(kind), RecurrentNet) else {}


def hyperparameters(task_name: str, steps: int | None = None, batch_size: int | None = None,
                    lr: float | None = None, seed: int = 0, reg: float | None = None, target_rate_hz: float = 10.0,
                    clip: float = 1.0) -> dict:
    """The training hyperparameters of a fresh run: what was given, else the task's defaults."""
    d = DEFAULTS.get(task_name, {})
    return {"steps": steps or d.get("steps", 1000), "batch_size": batch_size or d.get("batch_size", 64),
            "lr": lr or d.get("lr", 0.01), "seed": seed, "reg": d.get("reg", 1.0) if reg is None else reg,
            "target_rate_hz": target_rate_hz,
            "clip": clip, "optimizer": "adam", "lr_schedule": "cosine"}


class Trainer:
    """BPTT with Adam over ``config["training"]``; checkpoints and the log go to ``out``.

    With several processes (``parallel``), each runs the model on its slice of the same global
    batch and the loss, metric and gradients are those of the global batch; only the main process
    writes the checkpoint, the log and the metrics."""

    def __init__(self, out: Path, task: Task, model, config: dict, state: dict | None, eval_every: int = 0,
                 eval_limit: int | None = None, parallel: distributed.Parallel | None = None):
        self.out, self.task, self.model, self.config = out, task, model, config
        self.hp = config["training"]
        self.eval_every, self.eval_limit = eval_every, eval_limit
        self.parallel = parallel or distributed.OneProcess()
        self.parallel.check_batch(self.hp["batch_size"])
        self.dt = model.config.dt
        self.net = self.parallel.wrap(model)  # what runs the training steps; ``model`` is what is saved
        self.opt = torch.optim.Adam(model.parameters(), lr=self.hp["lr"])
        self.rng = np.random.default_rng(self.hp["seed"])
        self.log = TrainLog(out / LOG)
        self.start, self.seconds_before = 0, 0.0
        if state is not None:
            self._restore(state)
        self.began = time.monotonic()
        self.ema_loss = self.ema_metric = None

    def _restore(self, state: dict) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.start = state["step"]
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        self.seconds_before = state.get("train_seconds", 0.0)

    def seconds(self) -> float:
        return self.seconds_before + time.monotonic() - self.began

    def save(self, step: int, rngs: tuple | None = None) -> None:
        if not self.parallel.is_main:
            return
        np_state, torch_state = rngs or self.rngs()
        checkpoint.save(self.out, self.model, self.opt, step, self.config,
                        {"rng": np_state, "torch_rng": torch_state, "train_seconds": self.seconds()})

    def rngs(self) -> tuple:
        return self.rng.bit_generator.state, torch.get_rng_state()

    def set_lr(self, step: int) -> None:  # cosine decay to zero: the last weights are the settled ones
        hp = self.hp
        scale = 0.5 * (1 + math.cos(math.pi * step / hp["steps"])) if hp.get("lr_schedule") == "cosine" else 1.0
        for group in self.opt.param_groups:
            group["lr"] = hp["lr"] * scale

    def step(self, step: int) -> dict:
        """One update on the global batch (this process runs its slice); returns its log record."""
        hp, task, parallel = self.hp, self.task, self.parallel
        self.set_lr(step)
        X, target = task.batch(hp["batch_size"], self.rng, parallel.rows(hp["batch_size"]))  # this process's rows
        out = self.net(X)
        local, n = task.loss(out.Y, target), task.loss_terms(target)
        c, m = task.score(out.Y.detach(), target)
        # over the global batch: the sums of the loss terms and scores, each neuron's firing rate
        (n_all, loss_sum, c, m), rates = parallel.reduce(
            (n, local.item() * n, c, m), firing_rates(out.Z) if out.Z is not None else None)
        total = local * (n / n_all)  # this process's share of the global mean
        if rates is not None and hp["reg"]:
            total = total + hp["reg"] * rate_loss(rates, hp["target_rate_hz"], self.dt)
        self.opt.zero_grad(set_to_none=True)
        parallel.backward(total)
        if hp["clip"]:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), hp["clip"])
        self.opt.step()
        rec = {"step": step + 1, "loss": round(loss_sum / n_all, 5), task.metric: round(c / max(m, 1), 4)}
        if rates is not None:
            rec["rate_hz"] = round(float(rates.detach().mean()) * 1000 / self.dt, 2)
        if self.eval_every and (step + 1) % self.eval_every == 0 and parallel.is_main:
            self.model.eval()
            rec[f"heldout_{task.metric}"] = evaluate(self.model, task, limit=self.eval_limit)[task.metric]
            self.model.train()
        return rec

    def _postfix(self, rec: dict) -> dict:
        metric = self.task.metric
        self.ema_loss = rec["loss"] if self.ema_loss is None else 0.9 * self.ema_loss + 0.1 * rec["loss"]
        self.ema_metric = rec[metric] if self.ema_metric is None else 0.9 * self.ema_metric + 0.1 * rec[metric]
        return {"loss": f"{self.ema_loss:.3f}", metric[:3]: f"{self.ema_metric:.3f}",
                **({"Hz": rec["rate_hz"]} if "rate_hz" in rec else {})}

    def run(self, progress: bool = True, desc: str = "") -> None:
        """Train from the checkpoint's step to the last; Ctrl-C saves the steps done so far."""
        steps = self.hp["steps"]
        self.model.train()
        bar = tqdm(range(self.start, steps), initial=self.start, total=steps, desc=desc,
                   disable=not (progress and self.parallel.is_main), dynamic_ncols=True)
        last_save, done, redo = time.monotonic(), self.start, None
        try:
            for step in bar:
                redo = self.rngs()  # to redo this step exactly if it is interrupted
                rec = self.step(step)
                if self.parallel.is_main:
                    self.log.append(rec)
                done, redo = step + 1, None
                bar.set_postfix(**self._postfix(rec))
                if done == steps or time.monotonic() - last_save > SAVE_EVERY_S:
                    self.save(done)
                    last_save = time.monotonic()
        except KeyboardInterrupt:
            self._interrupted(done, redo)
            raise
        bar.close()
        if self.start >= steps:
            self.save(self.start)

    def _interrupted(self, done: int, redo: tuple | None) -> None:
        if done > self.start:  # keep what was learnt; --resume continues exactly here
            self.save(done, redo)
            print(f"\ninterrupted: checkpoint of step {done} saved in {self.out}; continue with --resume",
                  file=sys.stderr)

    def finish(self) -> dict:
        """Held-out metrics of the trained model and its training budget, also written to
        ``metrics.json``; evaluated by the main process, returned on every process."""
        metrics = self._evaluate_and_write() if self.parallel.is_main else None
        return self.parallel.broadcast(metrics)

    def _evaluate_and_write(self) -> dict:
        train_seconds = self.seconds()  # the training's, without this evaluation
        self.model.eval()
        metrics = evaluate(self.model, self.task)
        steps, batch_size = self.hp["steps"], self.hp["batch_size"]
        metrics.update(steps=steps, batch_size=batch_size, samples_seen=steps * batch_size,
                       train_seconds=round(train_seconds, 1), threads=torch.get_num_threads(),
                       processes=self.parallel.world_size)
        if not math.isfinite(metrics[self.task.metric]):
            raise RuntimeError(f"evaluation produced a non-finite {self.task.metric}")
        checkpoint.write_json(self.out / checkpoint.METRICS, metrics)
        return metrics


def train(task_name: str, kind: str, out: Path, *, steps: int | None = None, batch_size: int | None = None,
          lr: float | None = None, seed: int = 0, data_dir: str | None = None, resume: bool = False,
          reg: float | None = None, target_rate_hz: float = 10.0, clip: float = 1.0, eval_every: int = 0,
          eval_limit: int | None = None, model_params: dict | None = None, task_params: dict | None = None,
          command: list[str] | None = None, progress: bool = True) -> dict:
    """Train (or with ``resume`` continue) a ``kind`` model on ``task_name``; the checkpoint, its
    configuration, the training log and the held-out metrics go to the folder ``out``. Under
    torchrun, data-parallel over its processes (see :mod:`.distributed`)."""
    out = Path(out)
    model_class(kind)  # an unknown kind is refused before anything is read or written
    check_file_destination(out / checkpoint.CHECKPOINT, "checkpoint")
    with distributed.session() as parallel:
        run = {"command": command or sys.argv, "git_commit": checkpoint.git_commit(),
               "processes": parallel.world_size}
        if resume:
            task, model, config, state = _resume(out, task_name, kind, steps, data_dir)
            config.setdefault("resumed", []).append(run)  # keep how the run began; record each continuation
        else:
            hp = hyperparameters(task_name, steps, batch_size, lr, seed, reg, target_rate_hz, clip)
            task, model, config = _new(out, task_name, kind, hp, data_dir, model_params, task_params)
            config.update(run)
            state = None
        trainer = Trainer(out, task, model, config, state, eval_every, eval_limit, parallel)
        if parallel.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if resume:
                trainer.log.keep_until(trainer.start)
            else:
                trainer.log.clear()
        trainer.run(progress, desc=f"{kind} {task_name}")
        return trainer.finish()
