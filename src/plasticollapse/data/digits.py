"""scikit-learn's 8x8 handwritten digits, with a fixed stratified train/test split.

The 1,797 images ship with scikit-learn (no download), so the quick presets and the demo
run offline. They have no official split; :func:`digits_split` fixes one for everyone.
"""

from __future__ import annotations

import numpy as np

#: The digits split is fixed once for everyone: its seed is not the experiment's seed, so
#: every run, whatever its seed, trains and tests on the same images.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2

#: Largest pixel value: each pixel counts the set pixels of a 4x4 block of a 32x32 bitmap
#: (UCI optdigits), so values run over 0..16.
DIGITS_MAX_VALUE = 16.0


def digits_split(
    labels: np.ndarray, test_fraction: float = DIGITS_TEST_FRACTION, seed: int = DIGITS_SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices: each class gives ``round(test_fraction * n_c)`` to test.

    Per class, its indices are shuffled by ``numpy.random.default_rng(seed)`` (classes in
    ascending order, one shared generator) and the first ``round(test_fraction * n_c)`` go
    to test. Returns sorted ``(train_idx, test_idx)``; disjoint, covering all samples.
    """
    rng = np.random.default_rng(seed)
    test_parts = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_test = int(round(test_fraction * len(members)))
        test_parts.append(rng.permutation(members)[:n_test])
    test_idx = np.sort(np.concatenate(test_parts))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def read_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_x, train_y, test_x, test_y)`` of the digits, split by :func:`digits_split`:
    images float32 ``(N, 1, 8, 8)`` with values 0..16, labels int64."""
    from sklearn.datasets import load_digits  # imported only here: it takes a while

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = digits_split(labels)
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]
