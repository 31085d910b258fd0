"""How :func:`jaxspec.models.payne.fit` trains a single-network emulator (defaults: The Payne's recipe)."""

from __future__ import annotations

import dataclasses

from jaxspec import io
from jaxspec.data._checks import check_choice, check_float, check_int, check_widths

__all__ = ["LOSSES", "OPTIMIZERS", "Config"]

LOSSES = ("l1", "l2")
OPTIMIZERS = ("radam", "adam")


@io.register("payne.Config", arrays={})
@dataclasses.dataclass(frozen=True)
class Config:
    r"""Sizes and training settings of a single-network Payne emulator.

    The defaults are the recipe of The Payne's current release (300 LeakyReLU
    units in each of two hidden layers, L1 loss scaled by :math:`10^4`, RAdam
    at a learning rate of :math:`10^{-4}`, batches of 512, validation every
    100 epochs of its 10,000, the best weights on validation kept).

    Attributes
    ----------
    hidden : tuple of int
        Hidden-layer widths: the network is ``M -> hidden[0] -> ... -> L``
        with LeakyReLU(0.01) after every hidden layer and a linear output.
    loss : {"l1", "l2"}
        Mean absolute (the reference) or mean squared flux residual over the
        measured pixels of a batch.
    optimizer : {"radam", "adam"}
        ``optax.radam`` (the reference's rectified Adam) or ``optax.adam``,
        default moments and ``eps``.
    learning_rate : float
    loss_scale : float
        The gradient is multiplied by this before the optimiser: the
        reference trains on ``1e4`` times its L1 loss.  A constant factor on
        the loss changes Adam's steps only through ``eps`` and RAdam's also
        through its first ~5 un-rectified (momentum-SGD) steps; scaling the
        gradient reproduces exactly what the reference's optimiser sees,
        while ``history`` reports the loss itself, in flux units.  With a
        learning rate well above the reference's, set it to 1: RAdam's first
        steps are momentum-SGD steps of ``learning_rate * loss_scale``.
    batch_size : int
        Spectra per step (capped at the number of training spectra; the
        reference takes none when it has fewer than a batch).
    epochs : int
        Passes over the training spectra, ``n_train // batch_size`` steps
        each (the reference's ``num_steps``).
    validate_every : int
        Evaluate the validation loss after epochs ``0, k, 2k, ...`` and the
        last; the returned model has the weights of the lowest.
    validation_frac : float in [0, 1)
        Spectra held out at random for validation (at least one when
        positive).  0: no validation, the weights after the last epoch.
    """

    hidden: tuple = (300, 300)
    loss: str = "l1"
    optimizer: str = "radam"
    learning_rate: float = 1e-4
    loss_scale: float = 1e4
    batch_size: int = 512
    epochs: int = 10_000
    validate_every: int = 100
    validation_frac: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "hidden", check_widths(self.hidden, "config.hidden"))
        check_choice(self.loss, "config.loss", LOSSES)
        check_choice(self.optimizer, "config.optimizer", OPTIMIZERS)
        check_float(self.learning_rate, "config.learning_rate", low=0.0, open_low=True)
        check_float(self.loss_scale, "config.loss_scale", low=0.0, open_low=True)
        check_int(self.batch_size, "config.batch_size", minimum=1)
        check_int(self.epochs, "config.epochs", minimum=1)
        check_int(self.validate_every, "config.validate_every", minimum=1)
        check_float(self.validation_frac, "config.validation_frac", low=0.0)
        if not self.validation_frac < 1:
            raise ValueError(f"config.validation_frac: expected a value in [0, 1), found {self.validation_frac!r}")
