# The compiled key stream (brainsymphony/_keystream.c); _keystream_avx512 has the same API.
import numpy as np
from numpy.typing import NDArray

Buffer = NDArray[np.float32]

LANES: int

def stream(
    shape: tuple[int, int, int, int, int],
    first: int,
    last: int,
    qa: Buffer,
    qb: Buffer,
    qm: Buffer,
    windows: Buffer,
    inv_sigma: Buffer,
    region_sum: Buffer,
    region_mass: Buffer,
    time_sum: Buffer,
    window_sum: Buffer,
    time_mass: Buffer | None,
    /,
) -> None: ...
