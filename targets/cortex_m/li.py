"""ai.lsnn::LI for Cortex-M: the CPU target's TIR kernel (zero inputs skipped), rendered to C."""
from __future__ import annotations

from ..cpu.li import li_kernel

__all__ = ["li_kernel"]
