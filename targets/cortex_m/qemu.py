"""Run a built project's ELF under ``qemu-system-arm``: frames in, frames out, instructions counted.

``-icount shift=0`` makes QEMU advance its clock one nanosecond per
instruction, so the harness's SysTick (core clock) counts instructions
exactly and repeatably: ``instructions = ticks * 1e9 / clock``. These are
instructions, not cycles: QEMU models no pipeline, caches or wait states.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lsnn.reference.errors import LsnnError

MAGIC_IN = 0x494E534C
MAGIC_END = 0x454E534C


class QemuError(LsnnError):
    """QEMU failed, timed out or the firmware broke the harness protocol."""


@dataclass
class QemuRun:
    outputs: np.ndarray      # [n_seq, steps, output_size]
    states: np.ndarray       # [n_seq, state_size] final states
    ticks: int
    steps: int
    instructions: int        # in lsnn_step, all steps
    seconds: float

    @property
    def instructions_per_step(self) -> float:
        return self.instructions / self.steps if self.steps else 0.0


def run(elf: Path, board: str, sysclk_hz: int, frames: np.ndarray, states: np.ndarray, output_size: int,
        timeout: float | None = None) -> QemuRun:
    """Run ``frames`` ``[n_seq, steps, input_size]`` from ``states`` ``[n_seq, state_size]``."""
    import time

    if shutil.which("qemu-system-arm") is None:
        raise QemuError("qemu-system-arm not found (Debian: qemu-system-arm)")
    n_seq, steps, n_in = frames.shape
    n_state = states.shape[1]
    with tempfile.TemporaryDirectory(prefix="lsnn-qemu-") as tmp:
        tmp = Path(tmp)
        with open(tmp / "input.bin", "wb") as f:
            f.write(struct.pack("<6I", MAGIC_IN, n_seq, steps, n_in, output_size, n_state))
            for s in range(n_seq):
                f.write(np.ascontiguousarray(states[s], np.float32).tobytes())
                f.write(np.ascontiguousarray(frames[s], np.float32).tobytes())
        cmd = ["qemu-system-arm", "-M", board, "-nographic", "-monitor", "none", "-serial", "none",
               "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf.resolve())]
        if timeout is None:  # generous: QEMU runs well over 100 M instructions per second
            timeout = 60 + n_seq * steps * 0.05
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise QemuError(f"{elf} did not finish within {timeout:.0f} s under QEMU ({board})") from e
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            msg = (proc.stdout + proc.stderr).strip() or f"exit status {proc.returncode}"
            raise QemuError(f"{elf} failed under QEMU ({board}): {msg}")
        raw = (tmp / "output.bin").read_bytes()
    per_seq = steps * output_size + n_state
    want = 4 * n_seq * per_seq + 16
    if len(raw) != want:
        raise QemuError(f"{elf} wrote {len(raw)} bytes of output, expected {want}")
    magic, lo, hi, total = struct.unpack("<4I", raw[-16:])
    if magic != MAGIC_END or total != n_seq * steps:
        raise QemuError(f"{elf} wrote a damaged output trailer")
    body = np.frombuffer(raw[:-16], np.float32).reshape(n_seq, per_seq)
    ticks = lo + (hi << 32)
    return QemuRun(outputs=body[:, :steps * output_size].reshape(n_seq, steps, output_size).copy(),
                   states=body[:, steps * output_size:].copy(), ticks=ticks, steps=total,
                   instructions=round(ticks * 1e9 / sysclk_hz), seconds=seconds)
