"""What a bench runs a model on: batches of named input arrays (the feeds) and, where the
accuracy can be measured, targets in the tasks' format (``[T, B]``, the class asked at each
step, ``-1`` where nothing is asked).

The data of a model file comes from a task (its held-out set, with its metric when the task's
classes fit the model's outputs) or from an ``.npz`` file: one array ``[T, B, I]`` for a model
with one input, or one array per model input, named as the input; an optional integer array
``labels [B]`` makes the arg-max of the last step's output the prediction of each sequence.
Arrays of rank 3 and more are sequences (batch on axis 1), the others state (batch on axis 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from lsnn.reference.errors import LsnnError
from lsnn.reference.files import LABELS, read_npz
from lsnn.reference.tasks import Task



class DataError(LsnnError):
    """Data that does not fit the model it is given to."""


@dataclass
class Batch:
    feeds: dict[str, np.ndarray]
    target: np.ndarray | None = None  # [T, B]

    @property
    def sequences(self) -> int:
        a = next(iter(self.feeds.values()))
        return int(a.shape[batch_axis(a)])

    @property
    def steps(self) -> int:
        return int(next(a for a in self.feeds.values() if a.ndim >= 3).shape[0])


def batch_axis(a: np.ndarray) -> int:
    return 1 if a.ndim >= 3 else 0


def take(feeds: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    """The sequences ``index`` of every array (contiguous)."""
    return {k: np.ascontiguousarray(np.take(v, index, axis=batch_axis(v))) for k, v in feeds.items()}


def concatenate(batches: list[Batch]) -> Batch:
    """All batches as one."""
    feeds = {k: np.concatenate([b.feeds[k] for b in batches], axis=batch_axis(v))
             for k, v in batches[0].feeds.items()}
    targets = [b.target for b in batches]
    return Batch(feeds, None if any(t is None for t in targets) else np.concatenate(targets, axis=1))


def split(whole: Batch, batch_size: int, limit: int | None) -> list[Batch]:
    """``whole``'s first ``limit`` sequences in batches of ``batch_size``."""
    n = whole.sequences if limit is None else min(limit, whole.sequences)
    out = []
    for start in range(0, n, batch_size):
        index = np.arange(start, min(start + batch_size, n))
        out.append(Batch(take(whole.feeds, index), None if whole.target is None else whole.target[:, index]))
    return out


class LastStepLabels(Task):
    """Labels of whole sequences: the prediction is the arg-max of the output at the last step."""
    name = "labels"
    metric = "accuracy"

    @staticmethod
    def target(labels: np.ndarray, steps: int) -> np.ndarray:
        """``labels [B]`` as a task target ``[T, B]``: asked at the last step only."""
        target = np.full((steps, labels.shape[0]), -1, np.int64)
        target[-1] = labels
        return target


def model_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in proto.graph.initializer}
    return [vi for vi in proto.graph.input if vi.name not in inits]


def _dims(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in vi.type.tensor_type.shape.dim]


def output_classes(proto: onnx.ModelProto) -> int | None:
    """The fixed size of the first output's last axis (the classes a readout scores), or None."""
    dims = _dims(proto.graph.output[0])
    return dims[-1] if dims and isinstance(dims[-1], int) and dims[-1] > 0 else None


def _check_feeds(proto: onnx.ModelProto, feeds: dict, where: str) -> None:
    from lsnn.compiler.onnx.validate import ModelError, check_feeds

    try:
        check_feeds(proto, feeds)
    except ModelError as e:
        raise DataError(f"{where}: {e}") from None
    sizes = {k: v.shape[batch_axis(v)] for k, v in feeds.items()}
    if len(set(sizes.values())) > 1:
        raise DataError(f"{where}: the arrays hold different numbers of sequences {sizes}")


# -- from a task -------------------------------------------------------------------------------

def task_data(task: Task, proto: onnx.ModelProto, label: str, batch_size: int,
              limit: int | None) -> tuple[list[Batch], Task | None, str | None]:
    """The task's held-out batches fed to the model's one input; the task as the scorer when its
    classes are the model's outputs, else None and why not."""
    inputs = model_inputs(proto)
    if len(inputs) != 1:
        raise DataError(f"{label} takes {len(inputs)} inputs ({', '.join(vi.name for vi in inputs)}); task "
                        f"'{task.name}' gives one: give the data as --inputs FILE.npz with one array per input")
    dims = _dims(inputs[0])
    if len(dims) == 3 and isinstance(dims[2], int) and dims[2] != task.n_in:
        raise DataError(f"{label}: input '{inputs[0].name}' takes {dims[2]} features per step; task "
                        f"'{task.name}' gives {task.n_in}")
    batches = [Batch({inputs[0].name: X.numpy()}, target.numpy()) for X, target in task.heldout(batch_size, limit)]
    _check_feeds(proto, batches[0].feeds, f"task '{task.name}' for {label}")
    classes = output_classes(proto)
    if classes != task.n_out:
        return batches, None, (f"task '{task.name}' scores {task.n_out} output(s), {label} has "
                               f"{classes or 'an unknown number of'}: no {task.metric}")
    return batches, task, None


# -- from an .npz file -------------------------------------------------------------------------

def _named_feeds(arrays: dict, inputs: list, where: str) -> dict[str, np.ndarray]:
    names = [vi.name for vi in inputs]
    if len(arrays) == 1 and len(names) == 1:
        return {names[0]: next(iter(arrays.values()))}
    missing, extra = [n for n in names if n not in arrays], sorted(set(arrays) - set(names))
    if missing or extra:
        raise DataError(f"{where}: holds {sorted(arrays) or 'no input arrays'}, the model takes "
                        f"{', '.join(names)}" + (f" (no array '{missing[0]}')" if missing else
                                                 f" ('{extra[0]}' is none of them)"))
    return {n: arrays[n] for n in names}


def _as_float32(feeds: dict, where: str) -> dict[str, np.ndarray]:
    out = {}
    for k, v in feeds.items():
        if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer) or v.dtype == bool):
            raise DataError(f"{where}: array '{k}' is {v.dtype}, not numbers")
        out[k] = v.astype(np.float32, copy=False)
    return out


def _labels(labels: np.ndarray, sequences: int, classes: int | None, where: str) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != sequences:
        raise DataError(f"{where}: '{LABELS}' has shape {list(labels.shape)}, expected [{sequences}] "
                        "(one class per sequence)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: '{LABELS}' is {labels.dtype}, expected integer classes")
    if labels.size and (labels.min() < 0 or classes is not None and labels.max() >= classes):
        raise DataError(f"{where}: '{LABELS}' holds {labels.min()}..{labels.max()}, the model has "
                        f"{classes} output(s): classes 0..{(classes or 1) - 1}")
    return labels.astype(np.int64)


def npz_data(path: str | Path, proto: onnx.ModelProto, label: str, batch_size: int,
             limit: int | None) -> tuple[list[Batch], Task | None]:
    """The file's arrays as the model's feeds, in batches; :class:`LastStepLabels` as the scorer when
    the file holds labels."""
    arrays = read_npz(path)
    where = f"{path} for {label}"
    labels = arrays.pop(LABELS, None)
    feeds = _as_float32(_named_feeds(arrays, model_inputs(proto), where), where)
    _check_feeds(proto, feeds, where)
    whole = Batch(feeds)
    if labels is not None:
        labels = _labels(labels, whole.sequences, output_classes(proto), where)
        whole.target = LastStepLabels.target(labels, whole.steps)
    return split(whole, batch_size, limit), None if labels is None else LastStepLabels()
