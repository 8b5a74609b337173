"""layout.join_records, the one byte join of record arrays: what it returns is what
np.concatenate returns (values and dtype), for every shape of input the callers hand it."""

from __future__ import annotations

import numpy as np
import pytest

from taskstats_fast import layout

DTYPE = layout.DTYPE
#: A row dtype with tail padding (as interval rows have): np.concatenate alone would drop it.
PADDED = np.dtype({"names": ["a", "b"], "formats": ["u8", "u1"], "offsets": [0, 8], "itemsize": 24})


def _records(rng: np.random.Generator, n: int, dtype: np.dtype = DTYPE) -> np.ndarray:
    return np.frombuffer(rng.bytes(n * dtype.itemsize), dtype)


def _same(joined: np.ndarray, reference: np.ndarray) -> None:
    """Field by field: np.concatenate copies fields, so the padding between them (the bytes
    a byte join keeps) is whatever its fresh array held."""
    assert joined.dtype == reference.dtype and joined.shape == reference.shape
    for name in joined.dtype.names:
        assert np.array_equal(joined[name], reference[name]), name


@pytest.mark.parametrize("sizes", [(3, 0, 5, 1), (4,), (0,), (0, 0), (1, 1), (200, 7, 64)])
def test_records_joined_as_bytes_are_the_concatenated_records(sizes):
    rng = np.random.default_rng(sum(sizes) + len(sizes))
    batches = [_records(rng, n) for n in sizes]
    joined = layout.join_records(batches)
    _same(joined, np.concatenate(batches))
    assert joined.dtype == DTYPE


def test_no_arrays_give_no_records_of_the_dtype_asked():
    assert layout.join_records([]).dtype == DTYPE and len(layout.join_records([])) == 0
    assert layout.join_records([], PADDED).dtype == PADDED


def test_one_array_is_copied_as_concatenate_copies_it():
    one = _records(np.random.default_rng(1), 6).copy()
    joined = layout.join_records([one])
    _same(joined, np.concatenate([one]))
    assert not np.shares_memory(joined, one)


def test_strided_views_are_joined_by_their_records():
    rng = np.random.default_rng(2)
    views = [_records(rng, 10)[::3], _records(rng, 9)[1::2]]
    _same(layout.join_records(views), np.concatenate(views))


def test_a_tail_padding_is_kept():
    rng = np.random.default_rng(3)
    batches = [_records(rng, 4, PADDED), _records(rng, 2, PADDED)]
    joined = layout.join_records(batches)
    assert joined.dtype == PADDED
    reference = np.concatenate(batches)   # the dtype's padding dropped, the values kept
    assert reference.dtype != PADDED
    _same(joined, reference.astype(PADDED))


def test_arrays_of_another_dtype_are_cast_as_concatenate_into_it_casts():
    rng = np.random.default_rng(4)
    plain = np.dtype([("a", "u8"), ("b", "u1")])
    batches = [_records(rng, 3, PADDED), _records(rng, 2, plain)]
    joined = layout.join_records(batches, PADDED)
    reference = np.empty(5, PADDED)
    np.concatenate(batches, out=reference)
    _same(joined, reference)
