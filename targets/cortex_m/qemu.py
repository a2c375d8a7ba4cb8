"""Run a built project's ELF under ``qemu-system-arm``: frames in, frames out, instructions counted.

The firmware's harness (``main.c``) reads its input and writes its output with Arm
semihosting calls. QEMU does not carry them out on the host: every call goes to its
GDB stub (``-semihosting-config target=gdb``), which talks to this module over QEMU's
own stdin and stdout, and :class:`HostCalls` answers them: ``input.bin`` is read from
memory, ``output.bin`` and the console are collected in memory, and any other request
(another file, a removal, a shell command) stops the run with :class:`QemuError`. The
firmware never reaches a host file; QEMU itself opens nothing but the ELF.

``-icount shift=0`` makes QEMU advance its clock one nanosecond per
instruction, so the harness's SysTick (core clock) counts instructions
exactly and repeatably: ``instructions = ticks * 1e9 / clock``. These are
instructions, not cycles: QEMU models no pipeline, caches or wait states.
"""
from __future__ import annotations

import os
import selectors
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lsnn.reference.errors import LsnnError

QEMU = "qemu-system-arm"
MAGIC_IN = 0x494E534C
MAGIC_END = 0x454E534C
INPUT, OUTPUT = "input.bin", "output.bin"
CONSOLE_FDS = (1, 2)       # where QEMU sends the semihosting console (SYS_WRITE0, SYS_WRITEC)
O_ACCMODE, O_RDONLY, O_WRONLY = 3, 0, 1  # GDB File-I/O open flags
EACCES = 13
PIPELINE = 8  # memory packets in flight: their replies (4 KiB at most) fit a pipe's buffer


class QemuError(LsnnError):
    """QEMU failed, timed out, or the firmware broke the harness protocol or asked for more."""


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


@dataclass
class FirmwareRun:
    """What one run of a firmware left: its exit status, ``output.bin`` and console text."""
    exit_code: int
    output: bytes
    console: str
    seconds: float


def command(elf: Path, board: str) -> list[str]:
    """QEMU with no display, monitor or serial port, semihosting served over the GDB stub on stdio."""
    return [QEMU, "-M", board, "-display", "none", "-monitor", "none", "-serial", "none", "-no-reboot",
            "-semihosting-config", "enable=on,target=gdb", "-gdb", "stdio", "-S",
            "-icount", "shift=0,sleep=off", "-kernel", str(Path(elf).resolve())]


class GdbLink:
    """The GDB remote serial protocol over a QEMU process's stdin and stdout (what the harness needs)."""

    def __init__(self, proc: subprocess.Popen, deadline: float, what: str):
        self.proc, self.deadline, self.what = proc, deadline, what
        self._buf = b""
        self._fd = proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)
        self.payload = 1000  # bytes of memory per packet, raised by handshake()

    def handshake(self) -> None:
        features = dict(f.split("=", 1) for f in self.ask(b"qSupported").decode().split(";") if "=" in f)
        size = int(features.get("PacketSize", "400"), 16)
        self.payload = max(64, (size - 64) // 2)  # memory travels as hex

    def _fill(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0 or not self._sel.select(left):
            raise TimeoutError
        chunk = os.read(self._fd, 1 << 16)
        if not chunk:
            raise EOFError
        self._buf += chunk

    def _token(self) -> bytes:
        """The next ack (``+``/``-``) or packet payload from QEMU."""
        while True:
            self._buf = self._buf.lstrip(b"\r\n")
            if self._buf[:1] in (b"+", b"-"):
                token, self._buf = self._buf[:1], self._buf[1:]
                return token
            end = self._buf.find(b"#")
            if self._buf[:1] == b"$" and end >= 0 and len(self._buf) >= end + 3:
                data, self._buf = self._buf[1:end], self._buf[end + 3:]
                if data[:1] not in (b"W", b"X"):  # no ack once QEMU is exiting
                    self._write(b"+")
                return b"$" + data
            if self._buf and self._buf[:1] != b"$":
                raise QemuError(f"{self.what}: QEMU's GDB stub sent {self._buf[:40]!r}")
            self._fill()

    def _write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    @staticmethod
    def _framed(data: bytes) -> bytes:
        return b"$" + data + b"#%02x" % (sum(data) & 0xFF)

    def send(self, data: bytes) -> None:
        while True:
            self._write(self._framed(data))
            token = self._token()
            if token == b"+":
                return
            if token != b"-":
                raise QemuError(f"{self.what}: QEMU's GDB stub answered {token[:40]!r} instead of an ack")

    def receive(self) -> bytes:
        while True:
            token = self._token()
            if token.startswith(b"$"):
                return token[1:]

    def ask(self, data: bytes) -> bytes:
        self.send(data)
        return self.receive()

    def ask_all(self, packets: list[bytes]) -> list[bytes]:
        """The replies to ``packets``, sent :data:`PIPELINE` at a time (QEMU answers them in order)."""
        replies = []
        for k in range(0, len(packets), PIPELINE):
            batch = packets[k:k + PIPELINE]
            self._write(b"".join(map(self._framed, batch)))
            replies += [self.receive() for _ in batch]
        return replies

    def read_memory(self, addr: int, n: int) -> bytes:
        spans = [(addr + k, min(self.payload, n - k)) for k in range(0, n, self.payload)]
        replies = self.ask_all([b"m%x,%x" % span for span in spans])
        if any(len(r) != 2 * size or r.startswith(b"E") for r, (_, size) in zip(replies, spans)):
            raise QemuError(f"{self.what}: the firmware passed a buffer at 0x{addr:x} that cannot be read")
        return bytes.fromhex(b"".join(replies).decode())

    def write_memory(self, addr: int, data: bytes) -> None:
        packets = [b"M%x,%x:" % (addr + k, len(data[k:k + self.payload])) + data[k:k + self.payload].hex().encode()
                   for k in range(0, len(data), self.payload)]
        if any(r != b"OK" for r in self.ask_all(packets)):
            raise QemuError(f"{self.what}: the firmware passed a buffer at 0x{addr:x} that cannot be written")


@dataclass
class HostCalls:
    """The host side of the firmware's semihosting: ``input.bin`` to read, ``output.bin`` to write and
    the console. Anything else the firmware asks for is refused, and ends the run with an error."""
    what: str
    data: bytes
    output: bytearray = field(default_factory=bytearray)
    console: bytearray = field(default_factory=bytearray)
    _pos: int = 0
    _open: dict = field(default_factory=dict)  # host fd -> name

    def answer(self, link: GdbLink, request: bytes) -> bytes:
        """The reply to one File-I/O request (``open,...``, ``read,...``); QemuError for any other."""
        call, _, args = request.partition(b",")
        handler = {b"open": self._open_file, b"read": self._read, b"write": self._write,
                   b"close": self._close}.get(call)
        if handler is None:
            raise self._refuse(f"call '{call.decode(errors='replace')}' ({args.decode(errors='replace')})")
        return handler(link, *args.split(b","))

    def _refuse(self, what: str) -> QemuError:
        return QemuError(f"{self.what}: the firmware asked the host for {what}; the harness serves only "
                         f"reading {INPUT}, writing {OUTPUT} and the console (nothing was done)")

    def _open_file(self, link: GdbLink, path: bytes, flags: bytes, _mode: bytes) -> bytes:
        addr, length = (int(x, 16) for x in path.split(b"/"))
        name = link.read_memory(addr, min(length, 4096)).rstrip(b"\0").decode(errors="replace")
        access = int(flags, 16) & O_ACCMODE
        wanted = {INPUT: O_RDONLY, OUTPUT: O_WRONLY}.get(name)
        if wanted is None or access != wanted:
            raise self._refuse(f"the file '{name}' ({'read' if access == O_RDONLY else 'write'})")
        fd = next(k for k in range(max(CONSOLE_FDS) + 1, 64) if k not in self._open)
        self._open[fd] = name
        if name == OUTPUT:
            self.output.clear()
        else:
            self._pos = 0
        return b"F%x" % fd

    def _read(self, link: GdbLink, fd: bytes, buf: bytes, count: bytes) -> bytes:
        fd, addr, n = int(fd, 16), int(buf, 16), int(count, 16)
        if self._open.get(fd) != INPUT:
            return b"F-1,%x" % EACCES
        chunk = self.data[self._pos:self._pos + n]
        link.write_memory(addr, chunk)
        self._pos += len(chunk)
        return b"F%x" % len(chunk)

    def _write(self, link: GdbLink, fd: bytes, buf: bytes, count: bytes) -> bytes:
        fd, addr, n = int(fd, 16), int(buf, 16), int(count, 16)
        sink = self.console if fd in CONSOLE_FDS else self.output if self._open.get(fd) == OUTPUT else None
        if sink is None:
            return b"F-1,%x" % EACCES
        sink += link.read_memory(addr, n)
        return b"F%x" % n

    def _close(self, _link: GdbLink, fd: bytes) -> bytes:
        return b"F0" if self._open.pop(int(fd, 16), None) else b"F-1,%x" % EACCES


def _serve(link: GdbLink, host: HostCalls) -> int:
    """Answer the firmware's calls until it exits; its exit status."""
    link.handshake()
    link.send(b"c")
    while True:
        packet = link.receive()
        if packet[:1] == b"W":
            return int(packet[1:3], 16)
        if packet[:1] != b"F":
            raise QemuError(f"{host.what}: QEMU stopped the firmware unexpectedly ({packet[:60].decode()!r})")
        link.send(host.answer(link, packet[1:]))


def run_firmware(elf: Path, board: str, data: bytes = b"", timeout: float = 60) -> FirmwareRun:
    """Run ``elf`` on ``board`` with ``data`` as its ``input.bin``."""
    if shutil.which(QEMU) is None:
        raise QemuError(f"{QEMU} not found (Debian: qemu-system-arm)")
    what = f"{elf} under QEMU ({board})"
    host = HostCalls(what, data)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lsnn-qemu-") as cwd, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command(elf, board), cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err)
        try:
            code = _serve(GdbLink(proc, time.monotonic() + timeout, what), host)
            proc.wait(timeout=10)
        except TimeoutError:
            raise QemuError(f"{elf} did not finish within {timeout:.0f} s under QEMU ({board})") from None
        except (EOFError, BrokenPipeError):
            proc.kill()
            proc.wait()
            err.seek(0)
            msg = err.read().decode(errors="replace").strip() or f"QEMU exited with status {proc.returncode}"
            raise QemuError(f"{what} stopped before the firmware finished: {msg}") from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return FirmwareRun(code, bytes(host.output), host.console.decode(errors="replace"),
                       time.perf_counter() - started)


def _input_file(frames: np.ndarray, states: np.ndarray, output_size: int) -> bytes:
    n_seq, steps, n_in = frames.shape
    parts = [struct.pack("<6I", MAGIC_IN, n_seq, steps, n_in, output_size, states.shape[1])]
    for s in range(n_seq):
        parts += [np.ascontiguousarray(states[s], np.float32).tobytes(),
                  np.ascontiguousarray(frames[s], np.float32).tobytes()]
    return b"".join(parts)


def run(elf: Path, board: str, sysclk_hz: int, frames: np.ndarray, states: np.ndarray, output_size: int,
        timeout: float | None = None) -> QemuRun:
    """Run ``frames`` ``[n_seq, steps, input_size]`` from ``states`` ``[n_seq, state_size]``."""
    n_seq, steps, _ = frames.shape
    n_state = states.shape[1]
    if timeout is None:  # generous: QEMU runs well over 100 M instructions per second
        timeout = 60 + n_seq * steps * 0.05
    fw = run_firmware(elf, board, _input_file(frames, states, output_size), timeout)
    if fw.exit_code != 0:
        raise QemuError(f"{elf} failed under QEMU ({board}): {fw.console.strip() or f'exit status {fw.exit_code}'}")
    raw = fw.output
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
                   instructions=round(ticks * 1e9 / sysclk_hz), seconds=fw.seconds)
