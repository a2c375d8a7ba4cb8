"""Write the project folder of a model for a Cortex-M target and build its ELF.

Folder: ``lsnn_model.{c,h}`` (the step and the C API), ``lsnn_kernels.c`` (TVM's
C), ``lsnn_runtime.{c,h}`` (static workspace), the QEMU harness (``main.c``,
``startup.c``, ``semihost.{c,h}``), ``lsnn.ld``, ``Makefile``, the built
``lsnn.elf`` and ``manifest.json`` with the footprint. Built in a temporary
folder; nothing is left behind when any step fails.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lsnn.compiler.importer import CompileError

from . import codegen, ctext

FIRMWARE = ("main.c", "startup.c", "semihost.c", "semihost.h", "lsnn_runtime.c", "lsnn_runtime.h")
_WORKSPACE = re.compile(r"TVMBackendAllocWorkspace\(\d+, \d+, \(uint64_t\)(\d+)ULL")
_OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes")
_LD = re.compile(r"^\S*/ld(\.bfd)?: ")


def memory_map(target) -> dict:
    """The linker script's placeholders for ``target``'s memory map."""
    lines = [f"  {name} (rwx) : ORIGIN = 0x{origin:08X}, LENGTH = {length // 1024}K"
             for name, (origin, length) in target.memory.items()]
    vectors = "VECTORS" in target.memory  # a region of its own, or the start of .text
    return {"TARGET": target.name, "BOARD": target.board, "MEMORY": "\n".join(lines),
            "VECTORS": "  .vectors : { KEEP(*(.vectors)) } > VECTORS" if vectors else "",
            "VECTORS_IN_TEXT": "" if vectors else "KEEP(*(.vectors))"}


def write_sources(folder: Path, target, kernels: str, model_c: str, model_h: str) -> int:
    """Write every source of the project into ``folder``; returns the workspace size in bytes."""
    workspace = workspace_bytes(kernels)
    (folder / "lsnn_kernels.c").write_text(kernels)
    (folder / "lsnn_model.c").write_text(model_c)
    (folder / "lsnn_model.h").write_text(model_h)
    for name in FIRMWARE:
        (folder / name).write_text(ctext.template(name))
    words = {"TARGET": [target.name], "BOARD": [target.board], "CPU": target.cflags, "OPT": [target.options["opt"]],
             "WORKSPACE": [max(workspace, 8)]}
    (folder / "Makefile").write_text(ctext.fill("Makefile.in", {k: ctext.make_words(*v) for k, v in words.items()}))
    (folder / "lsnn.ld").write_text(ctext.fill("lsnn.ld.in", memory_map(target)))
    return workspace


def _linker_lines(output: str) -> list[str]:
    """The linker's own messages in ``output``, without the path of ``ld``."""
    return [_LD.sub("ld: ", ln) for ln in output.splitlines() if _LD.match(ln)]


def build_error(output: str, target, weights_bytes: int) -> CompileError:
    """What went wrong in a failed build: each memory region that overflowed and by how much, or
    the compiler's and linker's error lines."""
    overflows = _OVERFLOW.findall(output)
    if overflows:
        parts = [f"region {region} ({target.memory[region][1] // 1024} KiB) overflowed by {int(n)} bytes"
                 if region in target.memory else f"region {region} overflowed by {int(n)} bytes"
                 for region, n in overflows]
        return CompileError(f"the model does not fit the memory of {target.name} (QEMU board {target.board}): "
                            f"{'; '.join(parts)} (its weights take {weights_bytes} bytes)\n"
                            + "\n".join(_linker_lines(output)))
    lines = [_LD.sub("ld: ", ln) for ln in output.strip().splitlines()]
    errors = [ln for ln in lines if "error" in ln.lower() or ln.startswith("ld: ") or "undefined reference" in ln]
    tail = "\n".join((errors or lines)[-15:])
    return CompileError(f"arm-none-eabi-gcc failed to build the project:\n{tail}")


def make(folder: Path, target, weights_bytes: int) -> str:
    try:
        proc = subprocess.run(["make", "-C", str(folder), "lsnn.elf"], check=False, capture_output=True, text=True,
                              timeout=600)
    except subprocess.TimeoutExpired as e:
        raise CompileError(f"building the ELF in {folder} took over 600 s") from e
    if proc.returncode != 0:
        raise build_error(proc.stdout + proc.stderr, target, weights_bytes)
    return proc.stdout


def _size(paths: list[Path]) -> dict:
    proc = subprocess.run(["arm-none-eabi-size", *map(str, paths)], capture_output=True, text=True, check=True)
    text = data = bss = 0
    for line in proc.stdout.splitlines()[1:]:
        cols = line.split()
        text, data, bss = text + int(cols[0]), data + int(cols[1]), bss + int(cols[2])
    return {"flash_bytes": text + data, "ram_bytes": data + bss, "text": text, "data": data, "bss": bss}


def _stack(folder: Path) -> dict:
    """Worst-case stack of one step: the harness's main, lsnn_step and the deepest kernel
    (from ``-fstack-usage``; the call chain is main -> lsnn_step -> kernel -> memcpy)."""
    usage = {}
    for su in folder.glob("*.su"):
        for line in su.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                usage[parts[0].rsplit(":", 1)[-1]] = int(parts[1])
    kernels = max((v for k, v in usage.items() if k.startswith("lsnn_k_")), default=0)
    model = usage.get("lsnn_step", 0) + kernels
    return {"stack_bytes_model": model, "stack_bytes": model + usage.get("main", 0),
            "stack_bytes_per_function": dict(sorted(usage.items()))}


def footprint(folder: Path) -> dict:
    model = _size([folder / "lsnn_model.o", folder / "lsnn_kernels.o", folder / "lsnn_runtime.o"])
    elf = _size([folder / "lsnn.elf"])
    return {"model": model, "elf": elf, **_stack(folder)}


def _manifest(proto, target, plan, layout: dict, folder: Path, workspace: int, source: dict) -> dict:
    import tvm
    from lsnn.targets.artifact import FORMAT

    manifest = {
        "format": FORMAT,
        "kind": "cortex-m project",
        "target": target.describe(),
        "tvm_version": tvm.__version__,
        **source,
        "layout": layout,
        "sequence_inputs": plan.sequence_inputs,
        "initial_state": plan.initial_state().tolist(),  # what lsnn_reset sets
        "workspace_bytes": workspace,
        "footprint": footprint(folder),
        "metadata": {p.key: p.value for p in proto.metadata_props},
    }
    if plan.initial_rows() > 1:  # a fixed batch whose sequences start from states of their own
        manifest["sequence_initial_states"] = [plan.initial_state(b).tolist() for b in range(plan.initial_rows())]
    return manifest


def plan_of(proto):
    """How the firmware runs ``proto``: one time step per call (:mod:`lsnn.compiler.stepgraph`) where
    it can, else the whole graph once per call (:mod:`lsnn.compiler.wholegraph`) when the step graph
    refuses it only for how it treats time."""
    from lsnn.compiler.stepgraph import NotStepwise, step_graph
    from lsnn.compiler.wholegraph import whole_graph

    try:
        plan = step_graph(proto)
        plan.check(proto)
        return plan
    except NotStepwise as e:
        return whole_graph(proto, str(e))


def workspace_bytes(kernels: str) -> int:
    """The static arena the kernels' workspace allocations take (8-byte aligned each)."""
    return sum((int(n) + 7) // 8 * 8 for n in _WORKSPACE.findall(kernels))


def _sources(proto, target):
    """The plan of ``proto`` and the C of its project: kernels, model, header, layout."""
    plan = plan_of(proto)
    mod = codegen.lower(plan, target)
    kernels, names, prototypes = codegen.kernels_c(mod, target)
    model_c, model_h, layout = codegen.model_c(mod, names, prototypes, plan)
    plan.check_fits(layout, workspace_bytes(kernels), target)
    layout["runs"] = plan.runs
    return plan, kernels, model_c, model_h, layout


def build(proto, target, source: dict):
    """Compile ``proto`` for ``target`` into a project folder with a built ELF."""
    from .artifact import CortexMArtifact

    target.require_toolchain()
    started = time.perf_counter()
    plan, kernels, model_c, model_h, layout = _sources(proto, target)
    folder = Path(tempfile.mkdtemp(prefix=f"lsnn-{target.name}-"))
    try:
        workspace = write_sources(folder, target, kernels, model_c, model_h)
        make(folder, target, layout["weights_bytes"])
        manifest = _manifest(proto, target, plan, layout, folder, workspace, source)
        art = CortexMArtifact(folder, manifest, owned=True)
        art.manifest["footprint"]["instructions_per_step"] = art.profile()
        art.manifest["compile_seconds"] = round(time.perf_counter() - started, 3)
        return art
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
