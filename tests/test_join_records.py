"""layout's byte operations on record arrays (join_records, take_records, copy_records,
empty_records, zeros_records): what each returns is what numpy's own operation returns (values
and dtype), for every shape of input the callers hand it."""

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


# ---- take, copy, empty, zeros --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [DTYPE, PADDED])
@pytest.mark.parametrize("n", [0, 1, 7, 300])
def test_records_taken_as_bytes_are_the_indexed_records(dtype, n):
    rng = np.random.default_rng(n + dtype.itemsize)
    records = _records(rng, n, dtype)
    for index in (rng.permutation(n), rng.integers(0, max(n, 1), size=2 * n) if n else np.zeros(0, np.intp),
                  rng.random(n) < 0.5, np.arange(n)[::-1]):
        taken = layout.take_records(records, index)
        assert taken.dtype == dtype and taken.shape == (len(records[index]),)
        _same(taken, records[index])
        assert taken.flags.writeable and taken.flags.c_contiguous and not np.shares_memory(taken, records)


def test_a_strided_view_is_taken_by_its_records():
    records = _records(np.random.default_rng(5), 40)[1::3]
    index = np.array([4, 0, 12, 4])
    _same(layout.take_records(records, index), records[index])


@pytest.mark.parametrize("dtype", [DTYPE, PADDED])
def test_records_copied_as_bytes_are_the_records_with_their_padding(dtype):
    records = _records(np.random.default_rng(6), 9, dtype)
    copied = layout.copy_records(records)
    assert copied.dtype == dtype and copied.tobytes() == records.tobytes()
    assert copied.flags.writeable and not np.shares_memory(copied, records)
    _same(layout.copy_records(records[::2]), records[::2].copy())


@pytest.mark.parametrize("dtype", [DTYPE, PADDED])
@pytest.mark.parametrize("n", [0, 1, 33])
def test_records_made_over_bytes_are_numpys_arrays_of_the_dtype(dtype, n):
    zeros, empty = layout.zeros_records(n, dtype), layout.empty_records(n, dtype)
    for made in (zeros, empty):
        assert made.dtype == dtype and made.shape == (n,) and made.flags.writeable
        assert made.flags.aligned and made.flags.c_contiguous
    assert zeros.tobytes() == bytes(n * dtype.itemsize)
    _same(zeros, np.zeros(n, dtype))
    empty[:] = zeros            # writable through, like any array
    _same(empty, zeros)
