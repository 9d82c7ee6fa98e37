"""Neural-collapse metrics against known answers and a brute-force float64 two-pass reference."""

import math

import numpy as np
import pytest
import torch

from plasticollapse.metrics.collapse import (
    EIGEN_RTOL,
    FLOAT32_EPS,
    CollapseAccumulator,
    collapse_metrics,
    default_pinv_rtol,
    nc1_loss,
)

# ---------------------------------------------------------------------------------------------
# Reference: straightforward numpy, float64, two passes, loops where the formula has a sum.
# ---------------------------------------------------------------------------------------------


def etf_dist(a):
    c = len(a)
    ideal = (np.eye(c) - np.ones((c, c)) / c) / np.sqrt(c - 1)
    return np.linalg.norm(a / np.linalg.norm(a) - ideal)


def reference(h, y, num_classes, weight=None, bias=None, logits=None, pinv_rtol=None):
    h = np.asarray(h, dtype=np.float64)
    y = np.asarray(y)
    present = [c for c in range(num_classes) if (y == c).any()]
    c = len(present)
    n = len(h)
    means = np.stack([h[y == k].mean(0) for k in present])
    global_mean = h.mean(0)
    centred = means - global_mean
    sw = np.zeros((h.shape[1], h.shape[1]))
    for i in range(n):
        d = h[i] - means[present.index(y[i])]
        sw += np.outer(d, d)
    sw /= n
    sb = sum(np.outer(m, m) for m in centred) / c
    evals, evecs = np.linalg.eigh(sb)
    evals, evecs = evals[::-1][: c - 1], evecs[:, ::-1][:, : c - 1]
    keep = evals > EIGEN_RTOL * evals[0]
    sb_pinv = evecs[:, keep] @ np.diag(1 / evals[keep]) @ evecs[:, keep].T
    rtol = h.shape[1] * FLOAT32_EPS if pinv_rtol is None else pinv_rtol
    cut = keep & (evals > rtol * evals[0])
    sb_cut = evecs[:, cut] @ np.diag(1 / evals[cut]) @ evecs[:, cut].T
    pair_index = [(i, j) for i in range(c) for j in range(i + 1, c)]
    dist = np.array([np.linalg.norm(means[i] - means[j]) for i, j in pair_index])
    closest = pair_index[int(dist.argmin())]
    var = np.array([((h[y == k] - means[j]) ** 2).sum(1).mean() for j, k in enumerate(present)])
    pairs = [
        (var[i] + var[j]) / (2 * np.sum((means[i] - means[j]) ** 2))
        for i in range(c)
        for j in range(i + 1, c)
    ]
    norms = np.linalg.norm(centred, axis=1)
    cos = [
        centred[i] @ centred[j] / (norms[i] * norms[j])
        for i in range(c)
        for j in range(c)
        if i != j
    ]
    out = {
        "num_classes_present": c,
        "num_classes_absent": num_classes - c,
        "nc1": np.trace(sw @ sb_pinv) / c,
        "nc1_pinv": np.trace(sw @ sb_cut) / c,
        "nc1_quotient": np.trace(sw) / np.trace(sb),
        "cdnv": np.mean(pairs),
        "sigma_b_rank": int(keep.sum()),
        "sigma_b_condition": evals[keep].min() / evals[0],
        "closest_pair_ratio": dist.min() / dist.mean(),
        "closest_pair_a": present[closest[0]],
        "closest_pair_b": present[closest[1]],
        "nc2_equinorm_means": np.std(norms, ddof=1) / np.mean(norms),
        "nc2_equiangularity": np.mean(np.abs(np.array(cos) + 1 / (c - 1))),
        "nc2_etf_error_means": etf_dist(centred @ centred.T),
    }
    if weight is not None:
        w = np.asarray(weight, dtype=np.float64)[present]
        wn = np.linalg.norm(w, axis=1)
        out["nc2_equinorm_weights"] = np.std(wn, ddof=1) / np.mean(wn)
        out["nc2_etf_error_weights"] = etf_dist(w @ w.T)
        out["nc3_papyan"] = (
            np.linalg.norm(w / np.linalg.norm(w) - centred / np.linalg.norm(centred)) ** 2
        )
        out["nc3_zhu"] = etf_dist(w @ centred.T)
    if logits is None and weight is not None:
        logits = h @ np.asarray(weight, dtype=np.float64).T
        if bias is not None:
            logits = logits + np.asarray(bias, dtype=np.float64)
    if logits is not None:
        dist = np.linalg.norm(h[:, None, :] - means[None, :, :], axis=2)
        nearest = np.array(present)[dist.argmin(1)]
        out["nc4_agreement"] = np.mean(np.asarray(logits).argmax(1) == nearest)
        out["nc4_mismatch"] = 1 - out["nc4_agreement"]
    return out


def assert_matches(got, want, rtol):
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(float(value), rel=rtol, abs=1e-300), key


def gaussian_classes(n=240, num_classes=5, dim=8, spread=1.0, scale=3.0, seed=0, dtype=None):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=scale, size=(num_classes, dim))
    y = rng.integers(0, num_classes, size=n)
    h = centres[y] + spread * rng.normal(size=(n, dim))
    return h if dtype is None else h.astype(dtype), y


def simplex_etf_means(num_classes, dim, scale=2.0):
    m = np.zeros((num_classes, dim))
    m[:, :num_classes] = np.sqrt(num_classes / (num_classes - 1)) * (
        np.eye(num_classes) - 1 / num_classes
    )
    return scale * m


# ---------------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------------


def test_exact_simplex_etf_is_fully_collapsed():
    c, dim = 4, 7
    centred = simplex_etf_means(c, dim)
    offset = np.zeros(dim)
    offset[-1] = 5.0  # a global mean outside the ETF's span: metrics must centre it away
    y = np.repeat(np.arange(c), 6)
    h = centred[y] + offset
    m = collapse_metrics(h, y, c, weight=centred, bias=np.zeros(c))
    for key in (
        "nc1",
        "nc1_quotient",
        "cdnv",
        "nc2_equinorm_means",
        "nc2_equiangularity",
        "nc2_etf_error_means",
        "nc2_equinorm_weights",
        "nc2_etf_error_weights",
        "nc3_papyan",
        "nc3_zhu",
        "nc4_mismatch",
    ):
        assert abs(m[key]) < 1e-12, key
    assert m["nc4_agreement"] == 1.0
    assert m["sigma_b_rank"] == c - 1
    assert m["num_classes_present"] == c and m["num_classes_absent"] == 0


def test_random_gaussian_matches_reference_with_classifier():
    h, y = gaussian_classes()
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(5, 8)), rng.normal(size=5)
    assert_matches(collapse_metrics(h, y, 5, weight=w, bias=b), reference(h, y, 5, w, b), 1e-9)


def test_random_gaussian_matches_reference_with_logits_torch_input():
    h, y = gaussian_classes(seed=3, spread=2.0)
    logits = np.random.default_rng(4).normal(size=(len(h), 5))
    got = collapse_metrics(torch.from_numpy(h), torch.from_numpy(y), 5, logits=torch.tensor(logits))
    assert_matches(got, reference(h, y, 5, logits=logits), 1e-9)
    assert 0 < got["nc4_agreement"] < 1


def test_given_logits_win_over_the_classifier():
    h, y = gaussian_classes(seed=5)
    w = np.random.default_rng(6).normal(size=(5, 8))
    logits = np.random.default_rng(7).normal(size=(len(h), 5))
    got = collapse_metrics(h, y, 5, weight=w, logits=logits)
    assert got["nc4_agreement"] == reference(h, y, 5, logits=logits)["nc4_agreement"]


def test_collapsed_float32_matches_float64_reference():
    # within-class std 1e-3 around means of size ~3: raw second moments would lose 6 digits
    h, y = gaussian_classes(n=400, num_classes=4, dim=16, spread=1e-3, scale=3.0, seed=8)
    h32 = h.astype(np.float32)
    w32 = np.random.default_rng(9).normal(size=(4, 16)).astype(np.float32)
    got = collapse_metrics(torch.from_numpy(h32), y, 4, weight=torch.from_numpy(w32))
    want = reference(h32.astype(np.float64), y, 4, w32.astype(np.float64))
    assert_matches(got, want, 1e-6)
    assert got["nc1"] < 1e-5


def test_float16_and_integer_features_are_accepted():
    h, y = gaussian_classes(n=60, num_classes=3, dim=4, seed=10)
    h16 = torch.tensor(h, dtype=torch.float16)
    got = collapse_metrics(h16, y, 3)
    assert_matches(got, reference(h16.double().numpy(), y, 3), 1e-9)
    assert math.isfinite(collapse_metrics(np.rint(h * 10).astype(int), y, 3)["nc1"])


# ---------------------------------------------------------------------------------------------
# Two NC1 conventions: the exact inverse and the authors' float32 torch.linalg.pinv
# ---------------------------------------------------------------------------------------------


def authors_nc1(h, y, num_classes):
    """The authors' NC1 (gianhess/dl_project, utils/neural_collapse.py), vectorised: float32
    class means, Sigma_W and Sigma_B, then trace(Sigma_W @ torch.linalg.pinv(Sigma_B)) / C
    with pinv's default tolerance."""
    h = torch.as_tensor(h, dtype=torch.float32)
    y = torch.as_tensor(y)
    mu_g = h.sum(0) / len(h)
    means = torch.stack([h[y == k].sum(0) / int((y == k).sum()) for k in range(num_classes)])
    d = h - means[y]
    sigma_w = d.T @ d / len(h)
    centred = means - mu_g
    sigma_b = centred.T @ centred / num_classes
    return float(torch.trace(sigma_w @ torch.linalg.pinv(sigma_b)) / num_classes)


def merged_pair_features(delta, n_per_class=80, num_classes=10, dim=100, dead=30, seed=31):
    """Float32 features like a late Permuted task: ``dead`` units always 0, class means of
    size ~3 with classes 0 and 1 only ``delta`` apart, class 2 close to class 3 (a weak
    but kept direction), within-class spread 0.5 centred exactly per class."""
    rng = np.random.default_rng(seed)
    live = dim - dead
    means = rng.normal(scale=3.0, size=(num_classes, live))
    means[1] = means[0] + delta * rng.normal(size=live) / np.sqrt(live)
    means[3] = means[2] + 0.05 * rng.normal(size=live)
    y = np.repeat(np.arange(num_classes), n_per_class)
    noise = 0.5 * rng.normal(size=(len(y), live))
    for k in range(num_classes):  # the sample class means are exactly ``means``
        noise[y == k] -= noise[y == k].mean(0)
    h = np.zeros((len(y), dim))
    h[:, :live] = means[y] + noise
    return h.astype(np.float32), y


def test_nc1_pinv_equals_nc1_on_well_conditioned_features():
    h, y = gaussian_classes(n=400, num_classes=10, dim=100, seed=32)
    got = collapse_metrics(h.astype(np.float32), y, 10)
    assert got["nc1_pinv"] == got["nc1"]
    assert got["nc1_pinv"] == pytest.approx(authors_nc1(h, y, 10), rel=1e-3)
    assert 1e-3 < got["sigma_b_condition"] <= 1


@pytest.mark.parametrize("delta", [2e-3, 5e-3])
def test_nc1_pinv_reproduces_torch_pinv_where_sigma_b_is_ill_conditioned(delta):
    # Two class means delta apart: Sigma_B's weakest eigenvalue is ~delta^2 / 20, 1e-9 to
    # 1e-8 of its largest: below pinv's cut-off (100 * eps_float32 = 1.2e-5), so the
    # authors' float32 pinv drops that direction, while the exact inverse (cut at 1e-10)
    # divides the within-class spread along it by that eigenvalue. The 2-3 pair's
    # direction (~1e-4 relative) is kept by both.
    h, y = merged_pair_features(delta)
    got = collapse_metrics(h, y, 10)
    want = authors_nc1(h, y, 10)
    assert got["nc1_pinv"] == pytest.approx(want, rel=1e-3)
    assert got["nc1"] > 1e3 * got["nc1_pinv"]  # the spike the exact convention shows
    assert got["sigma_b_rank"] == 9
    assert got["sigma_b_condition"] < 1e-7
    assert (got["closest_pair_a"], got["closest_pair_b"]) == (0, 1)
    assert got["closest_pair_ratio"] < 1e-3  # the reference below checks its value
    assert_matches(got, reference(h.astype(np.float64), y, 10), 1e-6)


def weak_direction_features(dim, b=2.0**-10):
    """Float32 features with a hand-computed Sigma_B: 3 classes of 4 samples, means
    (1, b), (-1, b), (0, -2b) in the first two units (the rest dead, so D = ``dim``),
    each class spread by +-e1 and +-b e2. Then mu_G = 0, Sigma_B = diag(2/3, 2b^2),
    Sigma_W = diag(1/2, b^2/2): the weak direction sits at 3b^2 of the largest eigenvalue
    and adds 1/12 to NC1 = 1/4 + 1/12 = 1/3 when kept, NC1 = 1/4 when dropped. Powers of
    two, so float32 holds every value exactly."""
    means = np.array([[1.0, b], [-1.0, b], [0.0, -2 * b]])
    spread = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, b], [0.0, -b]])
    h = np.zeros((12, dim), dtype=np.float32)
    h[:, :2] = (means[:, None, :] + spread[None]).reshape(12, 2)
    return h, np.repeat(np.arange(3), 4)


def test_default_pinv_rtol_is_torch_1_11s_default():
    # The authors pinned torch 1.11.0, whose pinv(A) cuts at max(m, n) * eps of A's dtype
    # (default_pinv_rtol's docstring cites the source); torch <= 1.10 cut at rcond=1e-15.
    assert default_pinv_rtol(100) == 100 * 2.0**-23
    # The weak direction (3 * 2^-20 = 2.9e-6 relative) lies between the two cut-offs at
    # D = 100 (1.2e-5): dropped by the 1.11 default, kept by rcond=1e-15 and by nc1.
    h, y = weak_direction_features(dim=100)
    got = collapse_metrics(h, y, 3)
    assert got["nc1_pinv"] == pytest.approx(1 / 4, rel=1e-9)
    assert got["nc1"] == pytest.approx(1 / 3, rel=1e-9)
    assert got["sigma_b_condition"] == pytest.approx(3 * 2.0**-20, rel=1e-9)
    assert collapse_metrics(h, y, 3, pinv_rtol=1e-15)["nc1_pinv"] == pytest.approx(1 / 3)
    assert authors_nc1(h, y, 3) == pytest.approx(1 / 4, rel=1e-5)
    # The cut-off scales with D: at D = 10 (1.2e-6) the same direction is kept.
    h, y = weak_direction_features(dim=10)
    assert collapse_metrics(h, y, 3)["nc1_pinv"] == pytest.approx(1 / 3, rel=1e-9)
    assert authors_nc1(h, y, 3) == pytest.approx(1 / 3, rel=1e-5)


def test_pinv_rtol_is_configurable():
    h, y = merged_pair_features(2e-3)
    exact = collapse_metrics(h, y, 10)
    # rtol 0 keeps every direction the exact convention keeps
    assert collapse_metrics(h, y, 10, pinv_rtol=0.0)["nc1_pinv"] == exact["nc1"]
    # a cut-off above the 2-3 pair's direction drops it too: NC1 falls further
    coarse = collapse_metrics(h, y, 10, pinv_rtol=1e-2)
    assert coarse["nc1_pinv"] < exact["nc1_pinv"]
    assert_matches(coarse, reference(h.astype(np.float64), y, 10, pinv_rtol=1e-2), 1e-6)
    with pytest.raises(ValueError, match="pinv_rtol"):
        CollapseAccumulator(10, 100, pinv_rtol=-1.0)


def test_closest_pair_of_a_simplex_etf_is_at_the_mean_distance():
    c = 5
    y = np.repeat(np.arange(c), 3)
    got = collapse_metrics(simplex_etf_means(c, 6)[y], y, c)
    assert got["closest_pair_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert got["sigma_b_condition"] == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------


def test_accumulator_over_batches_equals_whole_matrix():
    h, y = gaussian_classes(n=301, seed=11)
    rng = np.random.default_rng(12)
    w, b = rng.normal(size=(5, 8)), rng.normal(size=5)
    logits = rng.normal(size=(len(h), 5))
    whole = collapse_metrics(h, y, 5, weight=w, bias=b, logits=logits)
    acc = CollapseAccumulator(5, 8)
    for lo, hi in [(0, 7), (7, 7), (7, 100), (100, 250), (250, 301)]:
        acc.update(torch.tensor(h[lo:hi], dtype=torch.float64), y[lo:hi], logits[lo:hi])
    assert_matches(acc.compute(w, b), whole, 1e-9)
    assert acc.num_samples == 301


def test_second_pass_agreement_equals_kept_features():
    h, y = gaussian_classes(n=200, seed=13)
    logits = np.random.default_rng(14).normal(size=(len(h), 5))
    lean = CollapseAccumulator(5, 8, keep_features=False)
    for part in np.array_split(np.arange(200), 3):
        lean.update(h[part], y[part])
    assert "nc4_agreement" not in lean.compute()
    for part in np.array_split(np.arange(200), 4):
        lean.update_agreement(h[part], logits[part])
    want = collapse_metrics(h, y, 5, logits=logits)
    assert_matches(lean.compute(), want, 1e-9)
    with pytest.raises(ValueError, match="first pass"):
        lean.update(h[:3], y[:3])


def test_accumulator_does_not_modify_or_alias_its_input():
    h, y = gaussian_classes(n=50, seed=15)
    t = torch.tensor(h)
    acc = CollapseAccumulator(5, 8)
    acc.update(t, y)
    before = acc.compute()
    t.zero_()  # a user reusing the buffer must not change what was measured
    assert np.array_equal(t.numpy(), np.zeros_like(h))
    assert acc.compute() == before


def test_logits_with_some_batches_only_raise():
    h, y = gaussian_classes(n=20, seed=16)
    acc = CollapseAccumulator(5, 8)
    acc.update(h[:10], y[:10], np.zeros((10, 5)))
    with pytest.raises(ValueError, match="every batch"):
        acc.update(h[10:], y[10:])


# ---------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------


def test_absent_class_is_left_out_and_reported():
    h, y = gaussian_classes(n=200, num_classes=6, seed=17)
    keep = (y != 3) & (y != 5)
    h, y = h[keep], y[keep]
    w = np.random.default_rng(18).normal(size=(6, 8))
    got = collapse_metrics(h, y, 6, weight=w)
    assert got["num_classes_present"] == 4 and got["num_classes_absent"] == 2
    assert got["sigma_b_rank"] == 3
    assert_matches(got, reference(h, y, 6, w), 1e-9)


def test_fewer_dimensions_than_classes_minus_one():
    h, y = gaussian_classes(n=300, num_classes=7, dim=3, seed=19)
    got = collapse_metrics(h, y, 7)
    assert got["sigma_b_rank"] == 3
    assert math.isfinite(got["nc1"])
    assert_matches(got, reference(h, y, 7), 1e-8)


def test_constant_features_give_nan_not_crash():
    y = np.arange(12) % 3
    h = np.full((12, 4), 2.5)
    w = np.random.default_rng(20).normal(size=(3, 4))
    got = collapse_metrics(h, y, 3, weight=w)
    assert got["sigma_b_rank"] == 0
    for key in ("nc1", "nc1_pinv", "nc1_quotient", "cdnv", "nc2_equinorm_means"):
        assert math.isnan(got[key]), key
    for key in ("nc2_equiangularity", "sigma_b_condition", "closest_pair_ratio"):
        assert math.isnan(got[key]), key
    for key in ("nc2_etf_error_means", "nc3_papyan", "nc3_zhu"):
        assert math.isnan(got[key]), key
    assert math.isfinite(got["nc2_etf_error_weights"])
    assert 0 <= got["nc4_agreement"] <= 1


def test_single_class_present_gives_nan():
    h, _ = gaussian_classes(n=10, seed=21)
    got = collapse_metrics(h, np.zeros(10, dtype=int), 5)
    assert got["num_classes_present"] == 1 and math.isnan(got["nc1"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_raise(bad):
    h, y = gaussian_classes(n=20, seed=22)
    h[7, 2] = bad
    with pytest.raises(ValueError, match="NaN/inf.*row 7"):
        collapse_metrics(h, y, 5)


@pytest.mark.parametrize("labels", [[0, 1, 5], [0, -1, 2]])
def test_labels_out_of_range_raise(labels):
    with pytest.raises(ValueError, match=r"num_classes=5"):
        collapse_metrics(np.ones((3, 2)), np.array(labels), 5)


def test_bad_shapes_and_dtypes_raise():
    h, y = gaussian_classes(n=20, seed=23)
    with pytest.raises(ValueError, match="integer"):
        collapse_metrics(h, y.astype(float), 5)
    with pytest.raises(ValueError, match="2-D"):
        collapse_metrics(h[0], y[:1], 5)
    with pytest.raises(ValueError, match="dim=9"):
        CollapseAccumulator(5, 9).update(h, y)
    with pytest.raises(ValueError, match="weight"):
        collapse_metrics(h, y, 5, weight=np.ones((5, 3)))
    with pytest.raises(ValueError, match="logits"):
        collapse_metrics(h, y, 5, logits=np.full((20, 5), np.nan))
    with pytest.raises(ValueError, match="no samples"):
        CollapseAccumulator(5, 8).compute()


# ---------------------------------------------------------------------------------------------
# Differentiable NC1
# ---------------------------------------------------------------------------------------------


def test_nc1_loss_equals_collapse_metrics_on_the_batch():
    h, y = gaussian_classes(n=64, num_classes=6, dim=10, seed=24)
    y[y == 2] = 0  # a class absent from the batch
    loss = nc1_loss(torch.tensor(h), torch.tensor(y), 6)
    assert float(loss) == pytest.approx(collapse_metrics(h, y, 6)["nc1"], rel=1e-9)
    loss32 = nc1_loss(torch.tensor(h, dtype=torch.float32), torch.tensor(y), 6)
    assert loss32.dtype == torch.float32


def test_nc1_loss_rank_deficient_branch_matches():
    h, y = gaussian_classes(n=60, num_classes=6, dim=3, seed=25)
    loss = nc1_loss(torch.tensor(h), torch.tensor(y), 6)
    assert float(loss) == pytest.approx(collapse_metrics(h, y, 6)["nc1"], rel=1e-8)


@pytest.mark.parametrize("dim", [6, 2])
def test_nc1_loss_gradcheck(dim):
    h, y = gaussian_classes(n=24, num_classes=4, dim=dim, seed=26)
    x = torch.tensor(h, requires_grad=True)
    labels = torch.tensor(y)
    assert torch.autograd.gradcheck(lambda f: nc1_loss(f, labels, 4), (x,))


def test_nc1_loss_gradient_finite_near_exact_etf():
    # all nonzero eigenvalues of Sigma_B coincide here: eigh's backward would divide by 0
    centred = simplex_etf_means(4, 6)
    y = np.repeat(np.arange(4), 5)
    h = centred[y] + 1e-3 * np.random.default_rng(27).normal(size=(20, 6))
    x = torch.tensor(h, requires_grad=True)
    nc1_loss(x, torch.tensor(y), 4).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_nc1_loss_single_class_is_zero_with_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    loss = nc1_loss(x, torch.zeros(5, dtype=torch.int64), 3)
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))


def test_whole_matrix_in_many_chunks(monkeypatch):
    import plasticollapse.metrics.collapse as collapse

    h, y = gaussian_classes(n=95, seed=28)
    w = np.random.default_rng(29).normal(size=(5, 8))
    monkeypatch.setattr(collapse, "_CHUNK_ELEMENTS", 8 * 10)  # 10 rows per chunk
    assert_matches(collapse_metrics(h, y, 5, weight=w), reference(h, y, 5, w), 1e-9)
    h[63, 0] = np.nan
    with pytest.raises(ValueError, match="row 63"):
        collapse_metrics(h, y, 5)


def test_rejected_batch_leaves_the_accumulator_unchanged():
    h, y = gaussian_classes(n=40, seed=30)
    acc = CollapseAccumulator(5, 8)
    acc.update(h[:20], y[:20])
    bad = h[20:].copy()
    bad[3, 3] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        acc.update(bad, y[20:])
    assert acc.num_samples == 20
    assert_matches(acc.compute(), reference(h[:20], y[:20], 5), 1e-9)


def test_uncentred_gram_equals_h_transpose_h():
    # Collapsed features (means ~3, spread 1e-3) and an absent class: the gram recovered
    # from the shifted statistics keeps float64 accuracy.
    h, y = gaussian_classes(n=500, num_classes=5, dim=8, spread=1e-3, seed=13)
    y[y == 4] = 0
    acc = CollapseAccumulator(5, 8)
    for lo in range(0, len(h), 64):
        acc.update(torch.tensor(h[lo : lo + 64], dtype=torch.float32), y[lo : lo + 64])
    h32 = torch.tensor(h, dtype=torch.float32).double()
    want = h32.T @ h32
    got = acc.uncentred_gram()
    assert got.dtype == torch.float64
    assert float((got - want).abs().max() / want.abs().max()) < 1e-13
    with pytest.raises(ValueError, match="no samples"):
        CollapseAccumulator(5, 8).uncentred_gram()


def test_later_batches_shift_float32_rows_exactly_as_float64():
    # batches after the first subtract the class shifts from the float32 rows in one pass
    # (x - s_y computed in float64): the statistics are those of the float64 rows, by hand
    h, y = gaussian_classes(n=120, seed=31)
    h32 = torch.tensor(h, dtype=torch.float32)
    acc = CollapseAccumulator(5, 8)
    for part in range(0, 120, 40):
        acc.update(h32[part : part + 40], y[part : part + 40])
    d = h32.double() - acc.shift[torch.as_tensor(y)]
    assert torch.allclose(acc.second_moment, d.T @ d, rtol=1e-13, atol=0)
    sums = torch.zeros(5, 8, dtype=torch.float64).index_add_(0, torch.as_tensor(y), d)
    assert torch.allclose(acc.shifted_sum, sums, rtol=1e-13, atol=1e-13)
    squares = torch.zeros(5, dtype=torch.float64).index_add_(0, torch.as_tensor(y), (d * d).sum(1))
    assert torch.allclose(acc.shifted_sq, squares, rtol=1e-13, atol=0)
