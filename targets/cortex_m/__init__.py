"""Cortex-M targets: TVM's C output turned into a bare-metal project, run under QEMU.

``cortex-m4`` (with its single-precision FPU), ``cortex-m7`` and ``cortex-m55``,
each tied to the QEMU board of that core. Compiling a model writes a project
folder (C sources, a small C API, Makefile, start-up code, linker script) and
builds its ELF with ``arm-none-eabi-gcc``; running it executes the ELF under
``qemu-system-arm`` with deterministic instruction counting, its semihosting I/O
served by lsnn (the harness's input and output only: no host file access).
"""
from __future__ import annotations

import shutil

from ..base import FUSED_READOUT, RECURRENT, Option, Target, TargetError, register

TOOLCHAIN = ("arm-none-eabi-gcc", "arm-none-eabi-size", "make")
QEMU = "qemu-system-arm"
GCC_OPT = ("-O0", "-O1", "-O2", "-O3", "-Os", "-Oz", "-Ofast")


def missing_tools(names=TOOLCHAIN + (QEMU,)) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


class CortexMTarget(Target):
    #: QEMU board, GCC core flags, memory map (name -> (origin, length)), SysTick clock in Hz
    board: str = ""
    cflags: tuple = ()
    memory: dict = {}
    sysclk_hz: int = 25_000_000
    #: the core has Helium (MVE) vector units: the ALIF neuron update is a loop GCC vectorises
    helium: bool = False
    kernels = {"ALIF": "lsnn.targets.cortex_m.alif:alif_kernel", "LI": "lsnn.targets.cortex_m.li:li_kernel",
               "LSTM": "lsnn.targets.cortex_m.lstm:lstm_kernel",
               RECURRENT: "lsnn.targets.cortex_m.recurrent:recurrent_kernel", FUSED_READOUT: "lsnn.targets.cortex_m.alif:alif_kernel"}

    @classmethod
    def option_spec(cls) -> dict:
        return {"events": Option(True, "skip zero inputs and silent neurons in ALIF (false: the dense kernel)"),
                "opt": Option("-O2", "arm-none-eabi-gcc optimisation flag", choices=GCC_OPT)}

    def kernel_settings(self, op: str) -> dict:
        alif = {"events": self.options["events"], "vector": self.helium}
        return {"ALIF": alif, FUSED_READOUT: alif}.get(op, {})

    def target_dict(self) -> dict:
        return {"kind": "c", "mcpu": self.name}

    def can_run(self) -> tuple[bool, str]:
        missing = missing_tools((QEMU,))
        return (False, f"{', '.join(missing)} not found (Debian: qemu-system-arm)") if missing else (True, "")

    def require_toolchain(self) -> None:
        missing = missing_tools(TOOLCHAIN)
        if missing:
            raise TargetError(f"target '{self.name}' needs {', '.join(missing)} to build its ELF; not found "
                              f"(Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi make)")

    def compile(self, proto, source: dict):
        from .build import build

        return build(proto, self, source)

    def load_artifact(self, directory, manifest: dict):
        from .artifact import load_project

        return load_project(self, directory, manifest)

    def describe(self) -> dict:
        return {**super().describe(), "board": self.board, "cflags": list(self.cflags)}


@register
class CortexM4(CortexMTarget):
    name = "cortex-m4"
    board = "mps2-an386"
    cflags = ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard")
    memory = {"FLASH": (0x00000000, 4 << 20), "RAM": (0x20000000, 4 << 20)}


@register
class CortexM7(CortexMTarget):
    name = "cortex-m7"
    board = "mps2-an500"
    cflags = ("-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard")
    memory = {"FLASH": (0x00000000, 4 << 20), "RAM": (0x20000000, 4 << 20)}


@register
class CortexM55(CortexMTarget):
    name = "cortex-m55"
    board = "mps3-an547"
    cflags = ("-mcpu=cortex-m55", "-mfloat-abi=hard")
    # vector table in ITCM at 0, code and weights in the 2 MB SRAM, data in DTCM
    memory = {"VECTORS": (0x00000000, 512 << 10), "FLASH": (0x01000000, 2 << 20), "RAM": (0x20000000, 512 << 10)}
    sysclk_hz = 32_000_000
    helium = True
