"""The table of ops: each op's pieces fit together for every format that supports it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import quantbench_kernels as qk
from pytest_quantbench.ops import OPS
from pytest_quantbench.options import Size
from pytest_quantbench.registration import BUILTIN, Kernel, builtin_kernels
from pytest_quantbench.workloads import build

PAIRS = [(fmt.name, op.name) for fmt in qk.formats() for op in OPS.values() if op.supported_by(fmt)]


def test_vec_dot_is_supported_exactly_where_gemv_is():
    for fmt in qk.formats():
        assert OPS["vec_dot"].supported_by(fmt) == OPS["gemv"].supported_by(fmt) == fmt.supports("gemv")
    assert OPS["vec_dot"].supported_by(qk.get_format("Q4_K"))
    assert not OPS["vec_dot"].supported_by(qk.get_format("Q8_K"))


def test_the_builtin_kernels_are_every_supported_format_and_op():
    assert sorted((k.format_name, k.op) for k in builtin_kernels()) == sorted(PAIRS)
    assert {k.name for k in builtin_kernels()} == {BUILTIN}


@pytest.mark.parametrize("name,op", PAIRS)
@settings(max_examples=20)  # the table's wiring; test_conformance proves the kernels on many more inputs
@given(data=st.data())
def test_drawn_inputs_pass_the_check_of_the_builtin_kernel(name, op, data):
    fmt = qk.get_format(name)
    spec = OPS[op]
    spec.check(Kernel(name="builtin", qtype=name, op=op, fn=spec.builtin(fmt)), fmt, *data.draw(spec.draw(fmt, True)))


@pytest.mark.parametrize("name,op", PAIRS)
def test_benchmark_inputs_fit_the_op_and_say_what_they_move(name, op):
    fmt = qk.get_format(name)
    spec = OPS[op]
    work = build(fmt, op, Size("t", 4, 512))
    assert work.n_weights == 4 * 512
    result = spec.reference(fmt)(*work.inputs[0])
    packed = 4 * 512 * fmt.block_bytes // fmt.block_weights
    expected = {
        "dequantize": (packed + 4 * 2048, (4 * 512 // fmt.block_weights, fmt.block_weights)),
        "quantize": (packed + 4 * 2048, (2048 // fmt.block_weights, fmt.block_bytes)),
        "quantize_imatrix": (packed + 4 * 2048, (4, 512 // fmt.block_weights * fmt.block_bytes)),
        "vec_dot": (packed + 4 * 2048 + 4, ()),
        "gemv": (packed + 4 * 512 + 4 * 4, (4,)),
    }[op]
    assert work.nbytes == expected[0]
    assert np.shape(result) == expected[1]
