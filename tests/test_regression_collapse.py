"""Known answers for the regression-collapse metrics NRC1-NRC3 (Andriopoulos et al. 2024)."""

import numpy as np
import pytest

from plasticollapse.metrics.regression import nrc1, nrc2, nrc3, regression_collapse_metrics


def _brute_residual(h: np.ndarray, basis: np.ndarray) -> float:
    """(1/M) sum ||h^_i - proj(h^_i)||^2 by least squares, one sample at a time."""
    total = 0.0
    for row in h:
        unit = row / np.linalg.norm(row)
        coef, *_ = np.linalg.lstsq(basis, unit, rcond=None)
        total += float(np.sum((unit - basis @ coef) ** 2))
    return total / len(h)


def test_exactly_collapsed_features_give_zero():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 6))  # 2 targets, 6 features
    h = rng.normal(size=(50, 2)) @ w  # every feature in the row space of W
    y = rng.normal(size=(50, 2))
    assert nrc1(h, 2) == pytest.approx(0.0, abs=1e-20)
    assert nrc2(h, w) == pytest.approx(0.0, abs=1e-20)
    # W W^T proportional to Sigma^{1/2} - sqrt(gamma) I with gamma in range: NRC3 = 0.
    sigma = np.cov(y, rowvar=False, bias=True)
    values, vectors = np.linalg.eigh(sigma)
    target_gram = (vectors * (np.sqrt(values) - np.sqrt(0.5 * values.min()))) @ vectors.T
    w_shaped = np.linalg.cholesky(target_gram) @ np.linalg.qr(rng.normal(size=(6, 2)))[0].T
    assert nrc3(w_shaped, y) == pytest.approx(0.0, abs=1e-10)


def test_against_a_brute_force_float64_reference():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(40, 5)) + 2.0
    w = rng.normal(size=(3, 5))
    centred = h - h.mean(0)
    top = np.linalg.svd(centred)[2][:3].T
    assert nrc1(h, 3) == pytest.approx(_brute_residual(h, top), rel=1e-10)
    assert nrc2(h, w) == pytest.approx(_brute_residual(h, w.T), rel=1e-10)
    assert 0 < nrc2(h, w) < 1


def test_nrc3_by_hand_for_one_target():
    # n = 1: every normalised 1x1 positive matrix is [1], so any W gives NRC3 = 0.
    rng = np.random.default_rng(2)
    assert nrc3(rng.normal(size=(1, 4)), rng.normal(size=30)) == pytest.approx(0.0, abs=1e-12)


def test_nrc3_detects_the_wrong_shape():
    # Uncorrelated targets of equal variance: Sigma^{1/2} - sqrt(g) I is a multiple of I for
    # every g, so W W^T must be a multiple of I. Parallel rows are as far from that as it gets.
    raw = np.random.default_rng(3).normal(size=(200, 2))
    y = np.linalg.qr(raw - raw.mean(0))[0] * np.sqrt(200)  # covariance exactly I
    orthogonal = np.eye(2, 4)
    parallel = np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    assert nrc3(orthogonal, y) == pytest.approx(0.0, abs=1e-12)
    # ||[[1,1],[1,1]]/2 - I/sqrt(2)||_F^2 = 2 - sqrt(2)
    assert nrc3(parallel, y) == pytest.approx(2 - np.sqrt(2), rel=1e-9)


def test_dict_and_bad_input():
    rng = np.random.default_rng(4)
    out = regression_collapse_metrics(
        rng.normal(size=(10, 4)), rng.normal(size=(2, 4)), rng.normal(size=(10, 2))
    )
    assert set(out) == {"nrc1", "nrc2", "nrc3"}
    with pytest.raises(ValueError, match="finite"):
        nrc1(np.full((3, 2), np.nan), 1)
    with pytest.raises(ValueError, match="rows"):
        nrc3(rng.normal(size=(3, 4)), rng.normal(size=(10, 2)))
