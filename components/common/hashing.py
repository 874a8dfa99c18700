"""splitmix64, the one integer hash behind eval splits, generated IDs, ID sketches and user sampling.

Its output is part of the data contract: which rows go to eval, which IDs datagen writes and what
the validation sketches count all depend on it, so it lives here once. The training model hashes
IDs to embedding rows with the same finalizer in torch ops (`components.ranker.model.finalize64`);
tests/common/test_hashing.py checks that both agree bit for bit.
"""

from __future__ import annotations

import numpy as np

GOLDEN_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: 2**64 / golden ratio, odd
_MASK64 = (1 << 64) - 1


def finalize64(z: np.ndarray) -> np.ndarray:
    """splitmix64's output mix of uint64 values (a bijection on 64 bits); returns a new array."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):  # the multiplications wrap modulo 2**64 on purpose
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def splitmix64(values: np.ndarray, increment: int = GOLDEN_GAMMA) -> np.ndarray:
    """uint64 hashes of integer values: their two's-complement bits plus `increment`, mixed.

    `increment` (any Python int, taken modulo 2**64) salts the hash, so independent uses of the
    same IDs (eval split, user sampling) draw uncorrelated bits.
    """
    bits = np.asarray(values).astype(np.int64, copy=False).view(np.uint64)
    with np.errstate(over="ignore"):
        return finalize64(bits + np.uint64(increment & _MASK64))
