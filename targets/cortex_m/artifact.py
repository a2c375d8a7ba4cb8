"""A compiled Cortex-M model: its project folder, run under QEMU like any other runtime.

``run`` takes the model's own inputs (``[T, B, ...]`` frames, and the initial
states of a streaming model), runs the B sequences one after another on the
emulated core, and returns the model's outputs; the instructions spent in
``lsnn_step`` are kept in :attr:`last_run`. A model that runs whole
(:mod:`lsnn.compiler.wholegraph`) takes all its inputs in one frame and gives
all its outputs in one (:class:`WholeFrames`): one call of ``lsnn_step`` per run.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ..artifact import Artifact, ArtifactError, checked_file, sha256, write_artifact
from ..base import TargetError, get_target
from . import qemu

ELF = "lsnn.elf"
KEEP = (".c", ".h", ".ld", ".elf", ".map", ".su")
PROFILE_STEPS = 100
PROFILE_RATE = 0.1


class StepFrames:
    """A model run one time step per call: the ``[T, B, ...]`` inputs become B sequences of T frames
    (the initial states of a streaming model with them), the outputs come back per step."""

    def __init__(self, manifest: dict):
        self.manifest = manifest

    def _initial_states(self, B: int) -> np.ndarray:
        """``[B, state_size]``: the model's initial state for each sequence (a fixed batch may set
        one per sequence), before the inputs that set states are applied."""
        rows = self.manifest.get("sequence_initial_states")
        if rows is None:
            initial = np.asarray(self.manifest["initial_state"], np.float32)
            return np.tile(initial, (B, 1)) if initial.size else np.zeros((B, 0), np.float32)
        if len(rows) != B:
            raise ArtifactError(f"the model sets the initial states of {len(rows)} sequences; the inputs have B = {B}")
        return np.array(rows, np.float32)

    def pack(self, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
        """``[sequences, steps, input_size]`` frames and ``[sequences, state_size]`` states."""
        layout = self.manifest["layout"]
        frames = [inputs[f["name"]] for f in layout["frames"]]
        T, B = frames[0].shape[:2]
        X = np.concatenate([f.reshape(T, B, -1) for f in frames], axis=2).transpose(1, 0, 2)
        states = self._initial_states(B)
        for s in layout["states"]:
            if s["source"] in self.manifest["sequence_inputs"]:
                v = np.asarray(inputs[s["source"]], np.float32)
                v = v.reshape(v.shape[0], -1) if len(s["shape"]) == 2 else v.reshape(v.shape[1], -1)
                states[:, s["offset"]:s["offset"] + s["size"]] = v
        return X, states

    def unpack(self, r: qemu.QemuRun) -> dict:
        layout = self.manifest["layout"]
        B, T = r.outputs.shape[:2]
        out = {}
        for o in layout["outputs"]:
            v = r.outputs[:, :, o["offset"]:o["offset"] + o["size"]]  # [B, T, size]
            out[o["name"]] = np.ascontiguousarray(v.transpose(1, 0, 2).reshape(T, B, *o["shape"][2:]))
        for s in layout["states"]:
            if s["final"]:
                v = r.states[:, s["offset"]:s["offset"] + s["size"]]
                out[s["final"]] = v.reshape(B, -1) if len(s["shape"]) == 2 else v.reshape(1, B, -1)
        return out

    def timeout(self, X: np.ndarray) -> float | None:
        """Seconds QEMU may take on ``X``: None, qemu's own allowance per step."""
        return None

    def profile_input(self, steps: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray, str] | None:
        """Random spike frames (``rate`` of the inputs 1 each step) from the initial state."""
        rng = np.random.default_rng(seed)
        X = (rng.random((1, steps, self.manifest["layout"]["input_size"])) < rate).astype(np.float32)
        initial = np.asarray(self.manifest["initial_state"], np.float32).reshape(1, -1)
        return X, initial, f"random spikes, rate {rate}, {steps} steps"


class WholeFrames(StepFrames):
    """A model run whole, one call per run (:mod:`lsnn.compiler.wholegraph`): one frame holds every
    input, as 4-byte words (int32 inputs bit for bit), and one output frame every output."""

    def pack(self, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
        words = [np.ascontiguousarray(_as_word(inputs[f["name"]])).ravel() for f in self.manifest["layout"]["frames"]]
        return np.concatenate(words).reshape(1, 1, -1), np.zeros((1, 0), np.float32)

    def timeout(self, X: np.ndarray) -> float:
        """One call does the work of every step: a minute, and a millisecond per input word."""
        return 60 + X.size * 1e-3

    def unpack(self, r: qemu.QemuRun) -> dict:
        return {o["name"]: r.outputs[0, 0, o["offset"]:o["offset"] + o["size"]].reshape(o["shape"]).copy()
                for o in self.manifest["layout"]["outputs"]}

    def profile_input(self, steps: int, rate: float, seed: int) -> None:
        """None: a whole run's cost depends on its inputs (sequence lengths, the weights given at
        run time); :attr:`CortexMArtifact.last_run` has the instructions of each run."""
        return None


def _as_word(value) -> np.ndarray:
    """``value`` as float32 words: floats converted, int32 bit for bit (the firmware reads int32_t)."""
    v = np.asarray(value)
    return v.astype(np.int32).view(np.float32) if np.issubdtype(v.dtype, np.integer) else v.astype(np.float32)


#: how the firmware takes its inputs, by the plan's ``runs`` (a layout without one runs step by step)
FRAMES = {"step": StepFrames, "whole": WholeFrames}


class CortexMArtifact(Artifact):
    def __init__(self, folder: Path, manifest: dict, owned: bool = False, elf: Path | None = None):
        super().__init__(None, manifest)
        self.folder = Path(folder)
        self.elf = elf or self.folder / ELF  # the ELF that was checked (a loaded folder) or built
        self._owned = owned  # a temporary build folder, removed with the artifact
        self.target_obj = get_target(self.target, **manifest["target"]["options"])
        self.frames = FRAMES[manifest["layout"].get("runs", "step")](manifest)
        self.last_run: qemu.QemuRun | None = None

    def __del__(self):
        if getattr(self, "_owned", False):
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- running -------------------------------------------------------------
    def _qemu(self, X: np.ndarray, states: np.ndarray) -> qemu.QemuRun:
        return qemu.run(self.elf, self.target_obj.board, self.target_obj.sysclk_hz, X, states,
                        self.manifest["layout"]["output_size"], timeout=self.frames.timeout(X))

    def run(self, inputs, outputs=None):
        self._check(inputs)
        ok, why = self.target_obj.can_run()
        if not ok:
            raise TargetError(f"cannot run a '{self.target}' artifact here: {why}")
        self.last_run = self._qemu(*self.frames.pack(inputs))
        out = self.frames.unpack(self.last_run)
        return {n: out[n] for n in (outputs or self.outputs)}

    def profile(self, steps: int = PROFILE_STEPS, rate: float = PROFILE_RATE, seed: int = 0) -> dict | None:
        """Instructions per step on random spike frames (``rate`` of the inputs 1 each step); None
        where QEMU is missing or the model runs whole (:meth:`WholeFrames.profile_input`)."""
        ok, _ = self.target_obj.can_run()
        probe = self.frames.profile_input(steps, rate, seed) if ok else None
        if probe is None:
            return None
        X, initial, what = probe
        r = self._qemu(X, initial)
        return {"value": round(r.instructions_per_step), "input": what,
                "counted_by": "QEMU -icount shift=0 (SysTick), instructions, not cycles"}

    # -- saving --------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        def fill(tmp: Path) -> dict:
            for p in self.folder.iterdir():
                if p.is_file() and (p.suffix in KEEP or p.name == "Makefile"):
                    shutil.copy2(p, tmp / p.name)
            return dict(self.manifest, library=ELF, library_sha256=sha256(tmp / ELF))

        self.manifest = write_artifact(directory, fill, "Cortex-M project")
        return Path(directory)


def load_project(target, directory: Path, manifest: dict) -> CortexMArtifact:
    """A saved project folder (:meth:`CortexMTarget.load_artifact`): its ELF, checked, is what runs."""
    elf = checked_file(directory, manifest.get("library", ELF), manifest.get("library_sha256"), "ELF")
    return CortexMArtifact(directory, manifest, elf=elf)
