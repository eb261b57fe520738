"""How far one training step's update is from float64's, layer by layer.

A step at batch 128 and lr 0.1 changes Net-1h's first-layer weights by about
1e-4, so comparing the weights after a step with an absolute tolerance says
little: a missing update would pass. These helpers compare the update
itself, the change of each layer's weights and biases, with the change
float64 makes from the same weights on the same batch (plain SGD:
``p - lr / n * gradient``), as a relative error in the Frobenius norm::

    error = ||change - change_64|| / ||change_64||

Used by the gpu check (benchmarks/gpu_check.py), the comparison with
PyTorch (benchmarks/gpu_vs_torch.py) and the tests.
"""

from __future__ import annotations

import numpy as np

from ..backprop import gradient
from ..network import Network

# The largest relative error of a layer's update accepted per precision: fp32
# rounds at 2^-24, tf32's operands at 2^-11 and bf16's at 2^-8 (unit roundoffs
# 6e-8, 5e-4, 4e-3). Measured for Net-1h at batch 128: 5e-6 in fp32 (the
# float32 inputs' own rounding, through the sigmoid), 2e-3 in bf16.
UPDATE_TOLERANCE = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 1e-2}


def sgd_step64(network: Network, params: np.ndarray, x: np.ndarray, y: np.ndarray,
               lr: float) -> np.ndarray:
    """The parameters after one plain SGD step on the batch, computed in float64."""
    p = np.asarray(params, np.float64)
    _, grad_sum = gradient(network, p, np.asarray(x, np.float64), np.asarray(y, np.float64))
    return p - lr / x.shape[0] * grad_sum


def update_errors(network: Network, before: np.ndarray, after: np.ndarray,
                  expected: np.ndarray) -> list[dict]:
    """Per layer, the relative error of the weight and bias change ``after - before``
    against ``expected - before``; also the size of the expected change (its median
    magnitude), which says how small an update the check could see."""
    rows = []
    layers = zip(network.layers(np.asarray(before, np.float64)),
                 network.layers(np.asarray(after, np.float64)),
                 network.layers(np.asarray(expected, np.float64)))
    for index, ((w0, b0), (w1, b1), (w2, b2)) in enumerate(layers, start=1):
        row = {"layer": index}
        for name, start, actual, reference in (("weights", w0, w1, w2), ("bias", b0, b1, b2)):
            change = reference - start
            norm = float(np.linalg.norm(change))
            error = float(np.linalg.norm((actual - start) - change))
            row[name] = error / norm if norm else (0.0 if error == 0 else float("inf"))
            row[f"{name}_median_change"] = float(np.median(np.abs(change)))
        rows.append(row)
    return rows


def worst_error(rows: list[dict]) -> float:
    """The largest relative error over the layers' weights and biases."""
    return max(max(row["weights"], row["bias"]) for row in rows)
