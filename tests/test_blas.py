"""The compiled kernels' GEMM (engines/blas.py): known answers for every transpose, the
fallback BLAS, the check that refuses a wrong sgemm, and clear errors for bad arrays."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from plasticollapse.engines import blas


def _product(a, ta, b, tb, c, alpha, beta):
    """alpha op(a) op(b) + beta c in float64."""
    left = (a.T if ta else a).astype(np.float64)
    right = (b.T if tb else b).astype(np.float64)
    return alpha * (left @ right) + beta * c.astype(np.float64)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize(("m", "n", "k"), [(16, 100, 784), (1, 3, 5), (7, 1, 1)])
def test_gemm_equals_the_float64_product(ta, tb, m, n, k):
    rng = np.random.default_rng(m + n + k)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    c = rng.standard_normal((m, n)).astype(np.float32)
    expected = _product(a, ta, b, tb, c, -0.25, 1.0)
    blas.gemm(a, ta, b, tb, c, np.float32(-0.25), np.float32(1.0), blas.gemm_work())
    # float32 rounding of a k-term sum of products: gamma_k sum |a||b| (Higham, eq. 3.5)
    bound = (k + 2) * 2.0**-24 * (np.abs(a.T if ta else a) @ np.abs(b.T if tb else b) + 1)
    assert (np.abs(c - expected) <= 0.25 * bound + 2.0**-24 * np.abs(expected)).all()


def test_beta_zero_ignores_the_output_buffer():
    a, b = np.eye(3, dtype=np.float32), np.arange(9, dtype=np.float32).reshape(3, 3)
    c = np.full((3, 3), np.nan, np.float32)
    blas.gemm(a, False, b, False, c, np.float32(2.0), np.float32(0.0), blas.gemm_work())
    assert np.array_equal(c, 2 * b)


def test_both_blas_libraries_pass_the_import_check():
    """SciPy's sgemm (the fallback) agrees; so does the one this process registered."""
    assert blas._agrees(blas._scipy_sgemm())
    assert blas.SOURCE in ("mkl", "scipy")
    if blas.SOURCE == "mkl":
        assert blas._agrees(blas._mkl_sgemm())


def test_the_import_check_refuses_an_sgemm_that_computes_nothing():
    do_nothing = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 13))(lambda *args: None)
    assert not blas._agrees(ctypes.cast(do_nothing, ctypes.c_void_p).value)


def test_bad_shapes_and_layouts_raise():
    work = blas.gemm_work()
    a = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        blas.gemm(a, False, np.ones((4, 2), np.float32), False, np.ones((4, 2), np.float32),
                  np.float32(1), np.float32(0), work)  # fmt: skip
    with pytest.raises(ValueError, match="C-contiguous"):
        blas.gemm(np.asfortranarray(a), False, np.ones((3, 2), np.float32), False,
                  np.ones((4, 2), np.float32), np.float32(1), np.float32(0), work)  # fmt: skip
