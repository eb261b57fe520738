"""Shared test helpers."""

import numpy as np


def assert_allclose_verbose(actual, expected, rtol, atol=0.0, what="array"):
    """np.testing-style check that prints mismatch count, first indices and max diff."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual - expected)
    bad = diff > atol + rtol * np.abs(expected)
    if bad.any():
        first = np.argwhere(bad)[:5].tolist()
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{bad.size} mismatches (rtol={rtol}, atol={atol}); "
            f"first at {first}; max abs diff {diff.max():.3e}, "
            f"max rel diff {(diff / np.maximum(np.abs(expected), 1e-300)).max():.3e}")


def random_batch(network, n, rng, dtype=np.float64):
    """Inputs (n, n_in) and valid targets (n, n_out) for ``network``."""
    x = rng.standard_normal((n, network.sizes[0])).astype(dtype)
    labels = rng.integers(0, max(2, network.sizes[-1]), size=n)
    return x, network.targets(labels, dtype)
