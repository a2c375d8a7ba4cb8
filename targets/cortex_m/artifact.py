"""A compiled Cortex-M model: its project folder, run under QEMU like any other runtime.

``run`` takes the model's own inputs (``[T, B, ...]`` frames, and the initial
states of a streaming model), runs the B sequences one after another on the
emulated core, and returns the model's outputs; the instructions spent in
``lsnn_step`` are kept in :attr:`last_run`.
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


class CortexMArtifact(Artifact):
    def __init__(self, folder: Path, manifest: dict, owned: bool = False, elf: Path | None = None):
        super().__init__(None, manifest)
        self.folder = Path(folder)
        self.elf = elf or self.folder / ELF  # the ELF that was checked (a loaded folder) or built
        self._owned = owned  # a temporary build folder, removed with the artifact
        self.target_obj = get_target(self.target, **manifest["target"]["options"])
        self.last_run: qemu.QemuRun | None = None

    def __del__(self):
        if getattr(self, "_owned", False):
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- running -------------------------------------------------------------
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

    def _frames_and_states(self, inputs: dict) -> tuple[np.ndarray, np.ndarray, int, int]:
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
        return X, states, T, B

    def run(self, inputs, outputs=None):
        self._check(inputs)
        ok, why = self.target_obj.can_run()
        if not ok:
            raise TargetError(f"cannot run a '{self.target}' artifact here: {why}")
        layout = self.manifest["layout"]
        X, states, T, B = self._frames_and_states(inputs)
        r = qemu.run(self.elf, self.target_obj.board, self.target_obj.sysclk_hz, X, states,
                     layout["output_size"])
        self.last_run = r
        out = {}
        for o in layout["outputs"]:
            v = r.outputs[:, :, o["offset"]:o["offset"] + o["size"]]  # [B, T, size]
            out[o["name"]] = np.ascontiguousarray(v.transpose(1, 0, 2).reshape(T, B, *o["shape"][2:]))
        for s in layout["states"]:
            if s["final"]:
                v = r.states[:, s["offset"]:s["offset"] + s["size"]]
                out[s["final"]] = v.reshape(B, -1) if len(s["shape"]) == 2 else v.reshape(1, B, -1)
        return {n: out[n] for n in (outputs or self.outputs)}

    def profile(self, steps: int = PROFILE_STEPS, rate: float = PROFILE_RATE, seed: int = 0) -> dict | None:
        """Instructions per step on random spike frames (``rate`` of the inputs 1 each step)."""
        ok, _ = self.target_obj.can_run()
        if not ok:
            return None
        layout = self.manifest["layout"]
        rng = np.random.default_rng(seed)
        X = (rng.random((1, steps, layout["input_size"])) < rate).astype(np.float32)
        initial = np.asarray(self.manifest["initial_state"], np.float32).reshape(1, -1)
        r = qemu.run(self.elf, self.target_obj.board, self.target_obj.sysclk_hz, X, initial,
                     layout["output_size"])
        return {"value": round(r.instructions_per_step), "input": f"random spikes, rate {rate}, {steps} steps",
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
