"""One float32 GEMM for the compiled kernels: ``c = alpha op(a) op(b) + beta c``, through
the fastest BLAS this process has.

Numba's ``np.dot`` calls SciPy's BLAS (an OpenBLAS build). At the mini-batch engine's
shapes (a batch of 16-90 rows times 784 x 100) PyTorch's own BLAS, Intel's MKL in the x86
wheels, was ~2x faster on one thread (AVX-512 Xeon: 18 vs 42 us for 16 x 784 times 784 x
100; ``benchmarks/minibatch_speed.py`` prints both). :func:`gemm` calls the Fortran
``sgemm`` by a symbol name, ``plasticollapse_sgemm``, that this module registers with LLVM
when it is imported (``llvmlite.binding.add_symbol``): the compiled code refers to the name,
not to an address, so Numba's on-disk cache stays valid across processes. The address is
MKL's ``SGEMM`` exported by ``libtorch_cpu`` where there is one, otherwise SciPy's
``cython_blas.sgemm`` (the BLAS ``np.dot`` uses). MKL's is checked on small products
(through ctypes, before anything compiled links to it) and SciPy's is taken if it
disagrees. Both have the reference BLAS interface (LP64: 32-bit integers, every argument
by pointer).

Row-major arrays are column-major transposes, so ``C = op(A) op(B)`` (C-order) is computed
as ``C^T = op(B)^T op(A)^T`` in column-major terms: ``sgemm(tB, tA, n, m, k, alpha, B, ldb,
A, lda, beta, C, n)`` with each leading dimension the row length of the C-order array, as
``np.dot`` does it.

Rounding: another BLAS sums the k products in another order (float32 rounding apart); on
one CPU type, one thread and one library, the results are bit-identical run to run.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import NamedTuple

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

SYMBOL = "plasticollapse_sgemm"


def _mkl_sgemm() -> int | None:
    """The address of MKL's LP64 ``SGEMM`` inside PyTorch's CPU library, or None."""
    import torch

    names = {"linux": "libtorch_cpu.so", "darwin": "libtorch_cpu.dylib", "win32": "torch_cpu.dll"}
    path = Path(torch.__file__).parent / "lib" / names.get(sys.platform, "libtorch_cpu.so")
    try:
        function = ctypes.CDLL(str(path)).SGEMM
    except (OSError, AttributeError):
        return None
    return ctypes.cast(function, ctypes.c_void_p).value


def _scipy_sgemm() -> int:
    """The address of SciPy's ``cython_blas.sgemm`` (the BLAS of Numba's ``np.dot``)."""
    return get_cython_function_address("scipy.linalg.cython_blas", "sgemm")


_intp = types.intp
#: sgemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc), all by address.
_sgemm = types.ExternalFunction(SYMBOL, types.void(*([_intp] * 13)))


class GemmWork(NamedTuple):
    """The by-pointer arguments' memory: six int32 sizes, two float32 scalars, "NT"."""

    sizes: np.ndarray
    scalars: np.ndarray
    flags: np.ndarray


@njit(cache=True, nogil=True)
def gemm_work() -> GemmWork:
    """Scratch for :func:`gemm`, made once per pass (a call then allocates nothing)."""
    flags = np.empty(2, np.uint8)
    flags[0], flags[1] = ord("N"), ord("T")
    return GemmWork(np.zeros(6, np.int32), np.zeros(2, np.float32), flags)


@njit(cache=True, nogil=True)
def _c_order(x) -> bool:
    return x.strides[1] == 4 and x.strides[0] == 4 * x.shape[1]


@njit(cache=True, nogil=True)
def gemm(a, ta, b, tb, c, alpha, beta, work):
    """``c = alpha op(a) op(b) + beta c`` (op(x) = x.T if its flag, else x) for C-order
    float32 2-D arrays, ``c`` m x n, op(a) m x k, op(b) k x n; ``beta = 0`` ignores c's
    contents, as BLAS does. Shapes and layouts are checked (a wrong one raises ValueError)."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    if (a.shape[1] if ta else a.shape[0]) != m or (b.shape[1] if tb else b.shape[0]) != k:
        raise ValueError("gemm: shapes do not match")
    if (b.shape[0] if tb else b.shape[1]) != n:
        raise ValueError("gemm: shapes do not match")
    if not (_c_order(a) and _c_order(b) and _c_order(c)):
        raise ValueError("gemm: every array must be C-contiguous")
    if m == 0 or n == 0:
        return
    sizes, scalars = work.sizes, work.scalars
    sizes[0], sizes[1], sizes[2] = n, m, k
    sizes[3], sizes[4], sizes[5] = max(b.shape[1], 1), max(a.shape[1], 1), n
    scalars[0], scalars[1] = alpha, beta
    flag = work.flags.ctypes.data
    size = sizes.ctypes.data
    scalar = scalars.ctypes.data
    _sgemm(
        flag + (1 if tb else 0), flag + (1 if ta else 0), size, size + 4, size + 8, scalar,
        b.ctypes.data, size + 12, a.ctypes.data, size + 16, scalar + 4, c.ctypes.data,
        size + 20,
    )  # fmt: skip


def _agrees(address: int) -> bool:
    """Whether the Fortran sgemm at ``address`` computes small products right (every
    transpose), called through ctypes before anything compiled links to it."""
    pointer = ctypes.POINTER
    prototype = ctypes.CFUNCTYPE(
        None, *([ctypes.c_char_p] * 2), *([pointer(ctypes.c_int)] * 3), pointer(ctypes.c_float),
        ctypes.c_void_p, pointer(ctypes.c_int), ctypes.c_void_p, pointer(ctypes.c_int),
        pointer(ctypes.c_float), ctypes.c_void_p, pointer(ctypes.c_int),
    )  # fmt: skip
    sgemm = prototype(address)
    rng = np.random.default_rng(0)
    for ta in (False, True):
        for tb in (False, True):
            a = rng.standard_normal((5, 3) if ta else (3, 5)).astype(np.float32)
            b = rng.standard_normal((4, 5) if tb else (5, 4)).astype(np.float32)
            c = np.ones((3, 4), np.float32)
            ints = [ctypes.c_int(v) for v in (4, 3, 5, b.shape[1], a.shape[1], 4)]
            sgemm(
                b"T" if tb else b"N", b"T" if ta else b"N", *map(ctypes.byref, ints[:3]),
                ctypes.byref(ctypes.c_float(2.0)), b.ctypes.data, ctypes.byref(ints[3]),
                a.ctypes.data, ctypes.byref(ints[4]), ctypes.byref(ctypes.c_float(1.0)),
                c.ctypes.data, ctypes.byref(ints[5]),
            )  # fmt: skip
            expected = 2.0 * ((a.T if ta else a).astype(np.float64) @ (b.T if tb else b)) + 1.0
            if not np.allclose(c, expected, rtol=1e-5, atol=1e-5):
                return False
    return True


def _register() -> str:
    """Register MKL's sgemm under :data:`SYMBOL` if it works here, else SciPy's; returns
    which ("mkl" or "scipy")."""
    address = _mkl_sgemm()
    if address is not None and _agrees(address):
        llvm.add_symbol(SYMBOL, address)
        return "mkl"
    llvm.add_symbol(SYMBOL, _scipy_sgemm())
    return "scipy"


#: Which BLAS :func:`gemm` calls in this process: "mkl" (PyTorch's) or "scipy".
SOURCE = _register()
