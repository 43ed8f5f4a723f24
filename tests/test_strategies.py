"""The Hypothesis strategies reach what the conformance tests rely on them to reach: every integer
field at its extremes, at one repeated value and at arbitrary values, the f16 edge scales, and
derived fields that agree with the drawn quants."""

import numpy as np
import pytest
from hypothesis import Phase, given, settings

import quantbench_kernels as qk
from pytest_quantbench import strategies as qst


def _drawn(name: str, count: int = 300) -> np.ndarray:
    """``count`` single blocks of ``name`` as Hypothesis draws them (generation only, no shrinking,
    derandomized: the same blocks every run), as structured blocks."""
    fmt = qk.get_format(name)
    seen = []

    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None, derandomize=True)
    @given(qst.blocks(name))
    def draw(raw):
        assert raw.shape == (1, fmt.block_bytes) and raw.dtype == np.uint8
        seen.append(raw[0].copy())

    draw()
    return np.stack(seen).view(fmt.block_dtype).reshape(-1)


@pytest.mark.parametrize(("name", "field"), [("Q4_K", "qs"), ("Q6_K", "scales"), ("Q8_0", "qs")])
def test_integer_fields_are_drawn_at_both_extremes_one_value_and_anything(name, field):
    values = _drawn(name)[field]
    info = np.iinfo(values.dtype)
    assert np.any(np.all(values == info.min, axis=1))
    assert np.any(np.all(values == info.max, axis=1))
    same = np.all(values == values[:, :1], axis=1) & (values[:, 0] > info.min) & (values[:, 0] < info.max)
    assert np.any(same)
    distinct = np.array([len(set(v.tolist())) for v in values])
    assert np.any(distinct > values.shape[1] // 2)  # arbitrary values, not only the special patterns
    if info.min < 0:  # signed fields hold both signs in one block
        assert np.any((values.min(axis=1) < info.min // 2) & (values.max(axis=1) > info.max // 2))


def test_f16_scales_hit_the_edge_cases():
    bits = set(_drawn("Q4_K", 1000)["d"].view(np.uint16).tolist())
    assert {0x7C00, 0xFC00, 0x8000, 0x0000, 0x0001, 0x7BFF} <= bits  # inf, -inf, -0, 0, subnormal, largest


def test_derived_fields_are_recomputed_from_the_drawn_quants():
    blocks = _drawn("Q8_K", 50)
    assert np.array_equal(blocks["bsums"], blocks["qs"].reshape(-1, 16, 16).astype(np.int32).sum(axis=2))
