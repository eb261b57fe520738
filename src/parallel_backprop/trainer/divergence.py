"""The one divergence check: a run whose loss or weights stop being finite ends here."""

from __future__ import annotations

import math

import numpy as np

from ..errors import PbpError


class TrainingDiverged(PbpError):
    """The loss or the weights became NaN or infinite."""


# Training inputs beyond this magnitude make a diverged run their fault, not the
# learning rate's: standardised features, pixels in [0, 1] or log-scaled counts stay
# far below it, and a sigmoid saturates long before it.
INPUT_SCALE_LIMIT = 1e6


def check_finite(loss_total: float, params: np.ndarray, epoch: int, lr: float,
                 inputs: np.ndarray | None = None) -> None:
    """Raise :class:`TrainingDiverged` unless ``loss_total`` and every parameter are finite.

    Called before a state is kept (a checkpoint, an epoch's end), so that no
    checkpoint ever holds a diverged model. ``inputs``, the training inputs,
    are looked at only once the run has diverged: when they reach
    ``INPUT_SCALE_LIMIT`` the message blames their scale, which no learning
    rate repairs.
    """
    if math.isfinite(loss_total) and np.all(np.isfinite(params)):
        return
    message = (f"training diverged: the loss or the weights became NaN or infinite in epoch "
               f"{epoch} with learning rate {lr}; ")
    scale = float(np.abs(inputs).max()) if inputs is not None and inputs.size else 0.0
    if scale > INPUT_SCALE_LIMIT:
        message += (f"the training inputs reach magnitude {scale:.3g}: scale them (for "
                    "instance to mean 0 and deviation 1) before training; ")
    raise TrainingDiverged(message + "try a smaller --lr (the last checkpoint written, if "
                           "any, is kept)")
