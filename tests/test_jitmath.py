"""The hand-written float helpers of the Numba kernels against NumPy."""

import shutil

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_quantbench.bitexact import assert_bit_identical
from quantbench_kernels import compilation, jitmath, refmath, simd
from quantbench_kernels.qtypes import iq4_nl


@numba.njit
def _decode_all(bits):
    out = np.empty(bits.shape[0], dtype=np.float32)
    for i in range(bits.shape[0]):
        out[i] = jitmath.f16_to_f32(np.int32(bits[i]))
    return out


@numba.njit
def _encode_all(values):
    out = np.empty(values.shape[0], dtype=np.uint16)
    for i in range(values.shape[0]):
        out[i] = jitmath.f32_to_f16_bits(values[i])
    return out


@numba.njit
def _each(fn, values, out):
    """``out[i] = fn(values[i])`` for a compiled helper ``fn`` of one value."""
    for i in range(values.shape[0]):
        out[i] = fn(values[i])
    return out


def _nearest_all(values):
    return _each(jitmath.nearest_int, values, np.empty(values.shape[0], dtype=np.int32))


def test_f16_decode_matches_numpy_on_all_65536_patterns():
    bits = np.arange(1 << 16, dtype=np.uint16)
    expected = bits.view(np.float16).astype(np.float32)
    assert_bit_identical(expected, _decode_all(bits), "f16 decode")
    # The classes the issue names, spelled out.
    got = _decode_all(np.array([0x0000, 0x8000, 0x0001, 0x7BFF, 0x7C00, 0xFC00, 0x7E00], dtype=np.uint16))
    assert got[0] == 0 and not np.signbit(got[0]) and np.signbit(got[1])
    assert got[2] == np.float32(2.0**-24) and got[3] == np.float32(65504)
    assert np.isposinf(got[4]) and np.isneginf(got[5]) and np.isnan(got[6])


def _f16_and_midpoints() -> np.ndarray:
    finite = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = np.sort(finite[np.isfinite(finite)].astype(np.float64))
    mids = (finite[1:] + finite[:-1]) / 2  # exact ties: f16 needs 11 bits, float32 has 24
    near = np.concatenate([np.nextafter(mids.astype(np.float32), np.float32(np.inf)),
                           np.nextafter(mids.astype(np.float32), np.float32(-np.inf))])
    edges = np.array([65504, 65519.996, 65520, 65536, 1e10, np.inf, -np.inf, 2.0**-25, 2.0**-26, 6.1e-5],
                     dtype=np.float32)
    return np.concatenate([finite.astype(np.float32), mids.astype(np.float32), near, edges, -edges])


def test_f16_encode_rounds_like_numpy_on_every_f16_tie_and_neighbour():
    values = _f16_and_midpoints()
    expected = values.astype(np.float16).view(np.uint16)
    got = _encode_all(values)
    bad = np.nonzero(got != expected)[0]
    assert bad.size == 0, f"{bad.size} differ, first {values[bad[0]]!r}: {got[bad[0]]:#06x} != {expected[bad[0]]:#06x}"


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=64))
def test_f16_encode_matches_numpy_on_any_float32(bit_patterns):
    values = np.array(bit_patterns, dtype=np.uint32).view(np.float32)
    values = values[~np.isnan(values)]  # NaN payloads are not specified (every NaN -> 0x7E00)
    assert np.array_equal(_encode_all(values), values.astype(np.float16).view(np.uint16))


def test_f16_encode_of_nan_is_a_nan():
    assert np.isnan(np.uint16(_encode_all(np.array([np.nan], dtype=np.float32))[0]).view(np.float16))


@given(st.lists(st.floats(width=32, allow_nan=True), min_size=1, max_size=64))
def test_nearest_int_matches_the_reference_everywhere(values):
    x = np.array(values, dtype=np.float32)
    assert np.array_equal(_nearest_all(x), refmath.nearest_int(x))


def test_nearest_int_rounds_half_to_even_in_its_range():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 4194303.0, -4194303.0, 0.49999997], dtype=np.float32)
    assert _nearest_all(x).tolist() == [0, 2, 2, 0, -2, 4194303, -4194303, 0]
    assert np.array_equal(refmath.nearest_int(x), np.rint(x).astype(np.int32))


def test_the_cache_stamp_changes_when_any_helper_source_changes(tmp_path):
    # Kernels inline helpers from jitmath.py: a cache keyed on the kernel's own file would go stale.
    package = tmp_path / "kernels"
    shutil.copytree(compilation.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = compilation.source_stamp(str(package), "generic")
    assert before == compilation.source_stamp(compilation.PACKAGE_DIR, "generic")
    helper = package / "jitmath.py"
    text = helper.read_text()
    edited = text.replace("v = np.float32(f + F32(12582912.0))", "v = f + F32(12582912.0)")
    assert edited != text
    helper.write_text(edited)
    assert compilation.source_stamp(str(package), "generic") != before
    here = compilation.PACKAGE_DIR
    assert compilation.source_stamp(here, "pmaddwd") != compilation.source_stamp(here, "generic")


def test_every_kernel_is_cached_under_the_package_stamp():
    from quantbench_kernels import loops

    if not compilation.CACHE:
        pytest.skip("QUANTBENCH_NUMBA_CACHE=0 or this Numba has no cache-locator classes to extend")
    locator = loops._q4_k_dequantize_serial._cache._impl.locator
    assert locator.get_source_stamp() == compilation.source_stamp(compilation.PACKAGE_DIR, simd.CODEGEN)


def test_a_kernel_compiles_once_whether_its_inputs_are_writable_or_read_only():
    # Numba types a read-only array apart from a writable one: the loops hand dequantize and
    # quantize their inputs read-only (a model file's memory-mapped blocks are), and gemv float
    # activations as one row, so that a kernel has one signature per kind of input (compile time).
    from quantbench_kernels import api, loops

    x = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 64)
    frozen_x = x.copy()
    frozen_x.flags.writeable = False
    w = api.quantize(x, "Q8_0")
    api.quantize(frozen_x, "Q8_0")
    frozen = w.copy()
    frozen.flags.writeable = False
    act = api.quantize_activation(x[0], "Q8_0")
    ops = api.get_format("Q8_0").numba
    for weights in (w, frozen):
        api.dequantize(weights, "Q8_0", threads=1)
    for activation in (x[0], x[0].reshape(2, 32), act):  # the op (not the API) takes (nb, 32) values
        ops.gemv(w.reshape(4, 2, 34), activation, 1)
    dequantize = loops._q8_0_dequantize_serial.signatures
    quantize = loops._q8_0_quantize_serial.signatures
    gemv = loops._q8_0_gemv_serial.signatures
    assert len(dequantize) == 1 and not dequantize[0][0].mutable
    assert len(quantize) == 1 and not quantize[0][0].mutable
    # (other tests of this process may have passed read-only weights: the activations are the point)
    assert {(str(sig[1].dtype), sig[1].ndim) for sig in gemv} == {("float32", 1), ("uint8", 2)}


def _best_indices(v):
    return _each(iq4_nl.best_index, v, np.empty(v.shape[0], dtype=np.uint8))


def test_the_iq4_table_search_picks_what_cs_binary_search_picks():
    """IQ4_NL/IQ4_XS's nearest table value, found with selects instead of branches: on the table's
    values, the midpoints between them (ties go up) and the floats beside both, NaN (C's loop ends
    at the top), infinities, zeros and random values."""
    table = iq4_nl.KVALUES.astype(np.float32)
    mids = (table[:-1] + table[1:]) / 2
    near = [np.nextafter(a, b) for a in (table, mids) for b in (np.float32(np.inf), np.float32(-np.inf))]
    rng = np.random.default_rng(4)
    v = np.concatenate([table, mids, *near, np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3e38]),
                        (rng.standard_normal(100_000) * 60).astype(np.float32)]).astype(np.float32)
    np.testing.assert_array_equal(_best_indices(v), iq4_nl.best_index_ref(v))
    assert _best_indices(np.float32([np.nan]))[0] == 15
