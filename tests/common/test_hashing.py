"""splitmix64 is the one hash behind eval splits, generated IDs, ID sketches, user sampling and
embedding rows. The pinned values below were computed before the copies were merged into
components/common/hashing.py: if one changes, converted splits, generated data or sketches
silently change with it."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from components.common.hashing import GOLDEN_GAMMA, finalize64, splitmix64
from components.convert.plan import eval_mask
from components.datagen.rows import rank_to_id
from components.datagen.world import IdSpace
from components.ranker.model import finalize64 as finalize64_torch
from components.ranker.model import hash_ids
from components.validate.sketches import HyperLogLog

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
IDS = np.array([0, 1, -1, INT64_MAX, INT64_MIN, 123456789012345, -987654321], dtype=np.int64)
# splitmix64(0) is the first output of the reference generator seeded with 0 (0xE220A8397B1DCDAF).
SPLITMIX64_OF_IDS = [16294208416658607535, 10451216379200822465, 16490336266968443936, 3055647633038352039,
                     5196802822362493915, 15590920175006670075, 10239014496013463773]


def test_splitmix64_pinned_values() -> None:
    assert splitmix64(IDS).dtype == np.uint64
    assert splitmix64(IDS).tolist() == SPLITMIX64_OF_IDS
    assert splitmix64(IDS.view(np.uint64)).tolist() == SPLITMIX64_OF_IDS  # same bits, same hash
    assert splitmix64(IDS, increment=0).tolist() == finalize64(IDS.view(np.uint64)).tolist()


def test_splitmix64_does_not_modify_its_input() -> None:
    ids = IDS.copy()
    splitmix64(ids)
    finalize64(ids.view(np.uint64))
    np.testing.assert_array_equal(ids, IDS)


def test_eval_split_is_unchanged() -> None:
    assert eval_mask(IDS, 0.5).tolist() == [False, True, False, False, False, True, False]
    mask = eval_mask(np.arange(-50_000, 50_000, dtype=np.int64), 0.2)
    assert int(mask.sum()) == 20199
    assert hashlib.sha256(np.packbits(mask).tobytes()).hexdigest() == (
        "73bfde1e3febd331416ec9e79f81fa8a205bd381cf9458ce69e2b47ea0eeb00d")


def test_generated_ids_are_unchanged() -> None:
    ranks = np.array([0, 1, 2, 999, 2**40])
    assert rank_to_id(IdSpace(size=1000, exponent=1.1, salt=3), ranks).tolist() == [
        487617019471545679, 4076781235000726878, 1764211211286500143, 340098919625898934, 2544092414287144656]
    # a salt whose product with the golden gamma overflows 64 bits
    assert rank_to_id(IdSpace(size=1000, exponent=1.1, salt=2**63 + 5), np.array([0, 1, 7])).tolist() == [
        903114586442990803, 2175785886920115250, 4302161650893464992]


def test_id_sketch_is_unchanged() -> None:
    sketch = HyperLogLog()
    sketch.add(np.arange(-50_000, 50_000, dtype=np.int64))
    assert hashlib.sha256(sketch.registers.tobytes()).hexdigest() == (
        "503463dea3de9406e72213551277175996fe468a2e2a618017abc15f31bac468")


def test_embedding_rows_are_unchanged() -> None:
    ids = torch.from_numpy(IDS)
    assert hash_ids(ids, 1_000_003).tolist() == [0, 477455, 512476, 431581, 589075, 472189, 892504]
    assert hash_ids(ids, 2**62).tolist() == [
        0, 1626386729513190885, 3805636230021627259, 1902818115010813629, 2720858781877447050,
        4046355001316734395, 1168091143583485806]


@given(st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=64)
       .map(lambda xs: xs + [0, -1, 1, INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1]),
       st.integers(1, INT64_MAX))
def test_torch_and_numpy_finalizers_agree(ids: list[int], rows: int) -> None:
    values = np.array(ids, dtype=np.int64)
    expected = finalize64(values.view(np.uint64))
    got = finalize64_torch(torch.from_numpy(values.copy())).numpy().view(np.uint64)
    np.testing.assert_array_equal(got, expected)
    # hash_ids is the finalizer taken modulo the table size, counted as a signed int64 (floor mod)
    rows_np = np.remainder(expected.view(np.int64), np.int64(rows))
    np.testing.assert_array_equal(hash_ids(torch.from_numpy(values.copy()), rows).numpy(), rows_np)


def test_golden_gamma_is_the_reference_increment() -> None:
    assert GOLDEN_GAMMA == 0x9E3779B97F4A7C15
    assert splitmix64(np.array([0], dtype=np.int64))[0] == 0xE220A8397B1DCDAF
