"""How a network is trained, as options: the update rule, the rate's schedule, early
stopping, and the presets that fill whatever is not given (``pbp train``, ``pbp tune``).

``--preset seed`` is the seed's method exactly: sigmoid hidden units, MSE,
plain SGD at lr 0.1, batches of 128, a constant rate. ``--preset default``
(the default) trains a model worth keeping: ReLU, cross-entropy, Adam at
1e-3, a cosine rate, and early stopping that keeps the best epoch's model.
Options given explicitly override the preset's values.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from ..optim import OPTIMIZERS, OptimizerConfig
from ..trainer import LR_SCHEDULES
from .data import OptionGroup
from .options import stack

PRESETS = {
    "seed": {"activation": "sigmoid", "loss": "mse", "optimizer": "sgd", "lr": 0.1,
             "batch_size": 128, "lr_schedule": "constant", "early_stopping": False,
             "lrs": "0.001,0.002,0.01,0.1,0.5,1"},
    "default": {"activation": "relu", "loss": "cross-entropy", "optimizer": "adam",
                "lr": 1e-3, "batch_size": 128, "lr_schedule": "cosine",
                "early_stopping": True, "lrs": "0.0003,0.001,0.003"},
}
DEFAULT_PRESET = "default"


def apply_preset(params: dict) -> dict:
    """Fill the options left unset (None) in ``params`` from its ``preset``, in place.

    Only the options the command has are filled; returns ``params``. The
    loss is left unset and the preset's given as ``preset_loss``: a
    regression trains with mse whatever the preset (see :class:`.runs.NetOptions`).
    """
    preset = PRESETS[params.get("preset") or DEFAULT_PRESET]
    for name, value in preset.items():
        if name in params and params[name] is None and name != "loss":
            params[name] = value
    if "loss" in params:
        params["preset_loss"] = preset["loss"]
    return params


def _said(name: str) -> str:
    """The presets' values of ``name``, for the help text."""
    return f"default: {PRESETS['default'][name]}; seed preset: {PRESETS['seed'][name]}"


method_options = stack(
    click.option("--preset", type=click.Choice(list(PRESETS)), default=DEFAULT_PRESET,
                 show_default=True,
                 help="Settings for every option below (and --activation, --loss, --lr, "
                      "--batch-size) left out: seed = the seed's sigmoid, MSE, plain SGD at "
                      "lr 0.1 and a constant rate; default = relu, cross-entropy, adam at "
                      "1e-3, a cosine rate and early stopping."),
    click.option("--optimizer", type=click.Choice(OPTIMIZERS),
                 help=f"The update rule ({_said('optimizer')})."),
    click.option("--momentum", type=float, help="momentum, nesterov: the velocity's decay "
                                                "(default 0.9)."),
    click.option("--weight-decay", type=float,
                 help="L2 penalty on the weights, not biases (decoupled for adamw; default 0)."),
    click.option("--beta1", type=float, help="adam, adamw: first moment decay (default 0.9)."),
    click.option("--beta2", type=float,
                 help="adam, adamw: second moment decay (default 0.999)."),
    click.option("--eps", type=float, help="adam, adamw: the denominator's term (default 1e-8)."),
    click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES),
                 help="The rate per epoch: linear falls to lr/epochs; cosine follows half a "
                      "cosine; step multiplies by --step-gamma every --step-size epochs; "
                      "plateau by --plateau-factor after --plateau-patience epochs without a "
                      f"validation gain ({_said('lr_schedule')})."),
    click.option("--warmup-epochs", type=int,
                 help="Ramp the rate up linearly over the first N epochs, then the schedule "
                      "(default 0)."),
    click.option("--step-size", type=int, help="step: epochs between cuts (default 10)."),
    click.option("--step-gamma", type=float, help="step: the factor of a cut (default 0.1)."),
    click.option("--plateau-factor", type=float,
                 help="plateau: the factor of a cut (default 0.1)."),
    click.option("--plateau-patience", type=int,
                 help="plateau: epochs without a validation gain before a cut (default 5)."),
    click.option("--early-stopping/--no-early-stopping", default=None,
                 help="Stop when the validation accuracy (R² for regression) has not improved "
                      "for --patience epochs, and keep the best epoch's model "
                      f"({_said('early_stopping')})."),
    click.option("--patience", type=int,
                 help="Early stopping: epochs without improvement (default 10)."),
    click.option("--min-delta", type=float,
                 help="Early stopping: the least gain that counts (default 0)."),
)
"""The options of :class:`MethodOptions`, one group for ``pbp train`` and ``pbp tune``."""

OPTIMIZER_FIELDS = ("momentum", "weight_decay", "beta1", "beta2", "eps")
SCHEDULE_FIELDS = ("lr_schedule", "warmup_epochs", "step_size", "step_gamma",
                   "plateau_factor", "plateau_patience", "early_stopping", "patience",
                   "min_delta")


@dataclass(frozen=True)
class MethodOptions(OptionGroup):
    """The options of :data:`method_options`, the preset applied (see :func:`apply_preset`)."""

    preset: str
    optimizer: str
    momentum: float | None
    weight_decay: float | None
    beta1: float | None
    beta2: float | None
    eps: float | None
    lr_schedule: str
    warmup_epochs: int | None
    step_size: int | None
    step_gamma: float | None
    plateau_factor: float | None
    plateau_patience: int | None
    early_stopping: bool
    patience: int | None
    min_delta: float | None

    def optimizer_config(self, **overrides) -> OptimizerConfig:
        """The update rule; options left out take :class:`OptimizerConfig`'s defaults."""
        given = {name: getattr(self, name) for name in OPTIMIZER_FIELDS
                 if getattr(self, name) is not None}
        return OptimizerConfig(**{"name": self.optimizer, **given, **overrides})

    def settings(self) -> dict:
        """TrainConfig keywords: the optimizer, and the schedule and stopping options given."""
        given = {name: getattr(self, name) for name in SCHEDULE_FIELDS
                 if getattr(self, name) is not None}
        return {"optimizer": self.optimizer_config(), **given}
