"""The one divergence check: a run whose loss or weights stop being finite ends here."""

from __future__ import annotations

import math

import numpy as np

from ..errors import PbpError


class TrainingDiverged(PbpError):
    """The loss or the weights became NaN or infinite."""


def check_finite(loss_total: float, params: np.ndarray, epoch: int, lr: float) -> None:
    """Raise :class:`TrainingDiverged` unless ``loss_total`` and every parameter are finite.

    Called before a state is kept (a checkpoint, an epoch's end), so that no
    checkpoint ever holds a diverged model.
    """
    if not (math.isfinite(loss_total) and np.all(np.isfinite(params))):
        raise TrainingDiverged(
            f"training diverged: the loss or the weights became NaN or infinite in epoch "
            f"{epoch} with learning rate {lr}; try a smaller --lr (the last checkpoint "
            "written, if any, is kept)")
