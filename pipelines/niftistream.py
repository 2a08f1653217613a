"""Reading a 4D NIfTI once, front to back, in blocks of volumes (bounded memory, fast gzip).

NIfTI stores voxels in Fortran order with time slowest, so a block of consecutive volumes is one
contiguous byte range. Compressed files are decompressed sequentially with ISA-L (``isal``, 2-3x faster
than zlib) when it is installed; random access into a ``.gz`` (what ``img.dataobj[..., a:b]`` does) would
decompress the file again from its start for every block.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from isal import igzip as _gzip  # a faster gzip, same file format

from pipelines.images import array_proxy, load_image


def _open(path: Path):
    return _gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def iter_volume_blocks(path: str | Path, chunk: int = 32) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_volume, block)`` with ``block`` of shape (X, Y, Z, C) in order, scaled like nibabel.

    Parameters
    ----------
    path : str or Path
        A 4D ``.nii`` or ``.nii.gz``.
    chunk : int
        Volumes per block; memory holds two blocks (the next is read by a background thread while the
        caller works on the current one).

    Yields
    ------
    first_volume : int
    block : ndarray, shape (X, Y, Z, C)
        Stored dtype when unscaled, else float (``scl_slope``/``scl_inter`` applied).
    """
    path = Path(path)
    img = load_image(path)
    shape = img.shape
    if len(shape) != 4:
        raise ValueError(f"{path}: expected a 4D image, got shape {shape}")
    dtype = img.get_data_dtype()
    proxy = array_proxy(img, path)
    slope, inter = proxy.slope, proxy.inter
    volume_bytes = int(np.prod(shape[:3])) * dtype.itemsize
    with _open(path) as stream:
        stream.seek(int(proxy.offset))

        def read(count: int) -> np.ndarray:
            data = stream.read(volume_bytes * count)
            if len(data) != volume_bytes * count:
                raise ValueError(f"{path}: the file ends early (truncated download or copy?)")
            block = np.frombuffer(data, dtype=dtype).reshape((*shape[:3], count), order="F")
            if slope != 1 or inter != 0:
                block = block * slope + inter
            return block

        starts = list(range(0, shape[3], chunk))
        if not starts:  # no volume
            return
        with ThreadPoolExecutor(max_workers=1) as reader:
            pending = reader.submit(read, min(chunk, shape[3]))
            for i, start in enumerate(starts):
                block = pending.result()
                if i + 1 < len(starts):
                    pending = reader.submit(read, min(chunk, shape[3] - starts[i + 1]))
                yield start, block


def iter_raw_values(path: str | Path, block_bytes: int = 64 * 2**20) -> Iterator[np.ndarray]:
    """Yield the stored values of any NIfTI (3D or 4D) as flat arrays, before scaling, in file order."""
    img = load_image(path)
    dtype = img.get_data_dtype()
    remaining = int(np.prod(img.shape)) * dtype.itemsize
    size = max(dtype.itemsize, block_bytes // dtype.itemsize * dtype.itemsize)
    with _open(Path(path)) as stream:
        stream.seek(int(array_proxy(img, path).offset))
        while remaining > 0:
            data = stream.read(min(size, remaining))
            if not data:
                raise ValueError(f"{path}: the file ends early (truncated download or copy?)")
            remaining -= len(data)
            yield np.frombuffer(data[: len(data) // dtype.itemsize * dtype.itemsize], dtype=dtype)
