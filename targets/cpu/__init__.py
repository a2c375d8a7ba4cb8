"""The CPU target: LLVM for the host's CPU (x86-64 or aarch64), its vector units detected."""
from __future__ import annotations

import platform

from ..base import FUSED_READOUT, LSTM_READOUT, RECURRENT, Option, Target, register
from . import threadpool

TRIPLES = {"x86_64": "x86_64-unknown-linux-gnu", "aarch64": "aarch64-unknown-linux-gnu",
           "arm64": "aarch64-unknown-linux-gnu"}


def host_cpu() -> tuple[str, str]:
    """(mtriple, mcpu) of this machine: LLVM's name for the host CPU, so that AVX2/AVX-512
    or NEON are used (the wheel's default triple would fall back to generic code)."""
    from tvm.target import codegen

    machine = platform.machine()
    return TRIPLES.get(machine, f"{machine}-unknown-linux-gnu"), codegen.llvm_get_system_cpu()


def _check_mcpu(name: str) -> str | None:
    if name == "host":
        return None
    from ..tvm_runtime import import_tvm

    tvm = import_tvm()
    from tvm.target import codegen

    known = codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": host_cpu()[0]}))
    return None if name in known else f"LLVM knows no CPU of that name for {host_cpu()[0]} (e.g. {', '.join(known[:6])})"


#: float32 lanes of the kernels' vector loops without AVX-512: one AVX2 register (two SSE or
#: NEON registers)
LANES = 8
#: steps ahead whose input and output rows the kernels prefetch (a batch's rows of one sequence
#: lie B rows apart: beyond the hardware prefetcher's reach when B is large)
AHEAD = 4


def _check_threads(n: int) -> str | None:
    return "must be 0 (all cores) or a positive number of threads" if n < 0 else None


@register
class CpuTarget(Target):
    name = "cpu"
    kernels = {"ALIF": "lsnn.targets.cpu.alif:alif_kernel", "LI": "lsnn.targets.cpu.li:li_kernel",
               "LSTM": "lsnn.targets.cpu.lstm:lstm_kernel", LSTM_READOUT: "lsnn.targets.cpu.lstm:lstm_kernel",
               RECURRENT: "lsnn.targets.cpu.recurrent:recurrent_kernel", FUSED_READOUT: "lsnn.targets.cpu.alif:alif_kernel"}

    @classmethod
    def option_spec(cls) -> dict:
        return {"mcpu": Option("host", "LLVM CPU name, or host: this machine's", check=_check_mcpu),
                "opt_level": Option(3, "TVM optimisation level", choices=(0, 1, 2, 3)),
                "events": Option(True, "skip zero inputs and silent neurons in ALIF (false: the dense kernel)"),
                "threads": Option(0, "threads that share the batch (0: all cores this process may use)",
                                  check=_check_threads)}

    def kernel_settings(self, op: str) -> dict:
        vector = {"lanes": self.vector_lanes(), "parallel": True, "ahead": AHEAD}
        alif = {"events": self.options["events"], **vector}
        lstm = {"vector": True, "lanes": self.vector_lanes()}
        return {"ALIF": alif, FUSED_READOUT: alif, "LI": vector, "LSTM": lstm, LSTM_READOUT: lstm,
                RECURRENT: {"vector": True}}.get(op, {})

    def lstm_recurrent_layout(self, rt):
        """Blocked: :func:`.lstm.recurrent_layout`."""
        from .lstm import recurrent_layout

        return recurrent_layout(rt, **self.kernel_settings("LSTM"))

    def vector_lanes(self) -> int:
        """float32 lanes of the kernels' vector loops (and of the LSTM's register tiles): 16 with
        AVX-512 on this machine's CPU, else 8."""
        return 16 if self.options["mcpu"] == "host" and "avx512f" in self.features() else LANES

    def relax_pipeline(self):
        """TVM's CPU pipeline, after products by constant weight matrices (readouts) are given
        the vectorised kernel of :mod:`.matmul` (TVM's lowering of them is a scalar loop)."""
        import tvm

        from .matmul import constant_matmul_pass

        return tvm.transform.Sequential([constant_matmul_pass(self.vector_lanes(), parallel=True),
                                         super().relax_pipeline()])

    def before_run(self) -> None:
        """Size the runtime's thread pool (that of the calling thread) to the ``threads`` option."""
        threadpool.use(self.options["threads"])

    def target_dict(self) -> dict:
        triple, cpu = host_cpu()
        mcpu = cpu if self.options["mcpu"] == "host" else self.options["mcpu"]
        return {"kind": "llvm", "mtriple": triple, "mcpu": mcpu}

    def features(self) -> list[str]:
        """Vector extensions LLVM will use for this target (from the CPU's flags)."""
        try:
            flags = open("/proc/cpuinfo").read().split()
        except OSError:
            return []
        return sorted({f for f in flags if f in ("avx", "avx2", "fma", "avx512f", "neon", "asimd", "sve")})
