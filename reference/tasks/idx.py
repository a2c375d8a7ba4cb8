"""Reader for IDX files (the MNIST / Fashion-MNIST format), gzipped or raw."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from ..errors import LsnnError, MissingFileError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXError(LsnnError):
    """A file that is not a readable IDX file."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw, detected from its first bytes)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise IDXError(f"{path}: corrupt gzip stream ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise IDXError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"{path}: truncated header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - header != count * dtype.itemsize:
        raise IDXError(f"{path}: header says {dims} of {dtype} ({count * dtype.itemsize} bytes), "
                       f"file holds {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype, count, header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an IDX file (uint8 or int32 data); gzipped when ``compress`` or the name ends in ``.gz``."""
    path = Path(path)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
    arr = np.asarray(array)
    if arr.dtype not in codes:
        raise IDXError(f"write_idx supports uint8 and int32, got {arr.dtype}")
    head = bytes([0, 0, codes[arr.dtype], arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    data = head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)


def find_split(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 28, 28]`` and labels ``[N]`` of ``train`` or ``t10k`` in ``data_dir``."""
    data_dir = Path(data_dir)
    out = []
    for kind, nd in (("images", 3), ("labels", 1)):
        stem = f"{split}-{kind}-idx{nd}-ubyte"
        candidates = [data_dir / stem, data_dir / f"{stem}.gz", data_dir / stem.replace("-idx", ".idx")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise MissingFileError(f"no {stem}[.gz] in {data_dir} (expected MNIST-format IDX files)")
        out.append(read_idx(path))
    images, labels = out
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IDXError(f"{data_dir}: {split} images {images.shape} and labels {labels.shape} do not match")
    return images, labels
