"""Shared test helpers."""

from pathlib import Path

import numpy as np

from parallel_backprop.cli import main
from parallel_backprop.data import write_idx


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


# ---- the command line, run in this process --------------------------------------

def run(argv, capsys):
    """``pbp argv`` in this process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_clear_line(code, err, *expected):
    """A failure told in one line, ``pbp: error: ...``, containing each of ``expected``."""
    assert code != 0
    assert err.startswith("pbp: error:") and err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err


def mnist_folder(folder: Path, n=12) -> Path:
    """A small random MNIST-like set of the four gzipped IDX files in ``folder``."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for stem, count in (("train", n), ("t10k", n // 2)):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), compress=True)
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz",
                  rng.integers(0, 10, count, dtype=np.uint8), compress=True)
    return folder
