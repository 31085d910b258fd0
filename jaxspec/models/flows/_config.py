"""How :func:`jaxspec.models.flows.fit` builds and trains a Mendis flow."""

from __future__ import annotations

import dataclasses

from jaxspec import io
from jaxspec.data._checks import check_choice, check_float, check_int, check_widths

__all__ = ["INITS", "KINDS", "Config"]

#: ``"joint"``: the paper's flow of ``x = (S, y)``, every dimension mixed; ``"structured"``: a flow of
#: ``y`` and a flow of ``S`` whose couplings are conditioned on ``y``, ``p(S, y) = p(y) p(S | y)``.
KINDS = ("joint", "structured")
#: How the first 1x1 mixing of each flow starts: ``"whiten"`` (the data's ZCA whitening) or ``"rotation"``.
INITS = ("whiten", "rotation")


@io.register("flows.Config", arrays={})
@dataclasses.dataclass(frozen=True)
class Config:
    r"""Sizes and training settings of a Mendis flow.

    The defaults train on two CPU cores in minutes (the issue's "default"
    size); :meth:`reference` is the authors' configuration (12 blocks,
    conditioners of three hidden layers of 1000 units, batch 200, Adam at
    :math:`5 \times 10^{-6}`, weight decay :math:`10^{-6}`; about 0.88e9
    parameters at 2408 dimensions, a GPU's work).

    Attributes
    ----------
    kind : {"joint", "structured"}
        ``"joint"`` (the paper): one flow of ``x = (S, y)``;
        ``"structured"``: a flow of the labels ``y`` (``label_blocks`` blocks)
        and a flow of the spectrum whose every conditioner also sees ``y``,
        so that ``p(S, y) = p(y) p(S | y)`` exactly and ``p(S | y)`` is
        sampled in one pass.
    blocks : int
        Blocks (ActNorm -> 1x1 LU mixing -> spline coupling) of the flow of
        ``x`` (joint) or of ``S`` (structured).
    hidden : tuple of int
        Hidden widths of every conditioner MLP (LeakyReLU(0.2) after each).
    bins : int
        Rational-quadratic spline bins ``K`` per transformed dimension.
    bound : float
        The splines act on ``[-bound, bound]`` (identity tails outside), in
        the units of the standardised data (ActNorm's output).
    channels : int or None
        The 1x1 mixing's group size: None mixes all dimensions with one
        ``D x D`` matrix (the paper); ``c`` mixes each group of ``c``
        consecutive dimensions with one shared ``c x c`` matrix (GLOW's form),
        and must divide ``D`` (joint) or the number of pixels (structured).
    label_blocks : int
        Blocks of the label flow (structured only).
    init : {"whiten", "rotation"}
        How the first 1x1 mixing of each flow starts.  ``"rotation"`` (the
        paper's, GLOW's): a random rotation, so the untrained flow is a
        standard normal in standardised units.  ``"whiten"`` (the default,
        beyond the paper): the shrunk ZCA whitening of the training set
        (:func:`~jaxspec.models.flows._flow.init_whitening`, shrunk by held-out likelihood), so the untrained
        flow is already the data's Gaussian and training refines it.  On
        ``mock.mendis`` (2407 dimensions) a Gaussian of 18,000 stars (shrunk by
        0.01 of its mean eigenvalue) scored 2844 nats per star on 1,000
        held-out ones, the standard normal 3406 (standardised units).
    learning_rate : float
        Adam's step size.  With full LU mixing every step moves every entry
        of the ``D x D`` factors: on 3300 ``mock.mendis`` stars (2406
        dimensions) 1e-5 trained steadily (mean standardised NLL per star
        3.2e3 -> 3.0e3 in three epochs, a standard normal's is 3.4e3) while
        1e-4 diverged (2.1e5 to 1.8e6); small flows of a few dimensions
        train faster at 1e-3.
    weight_decay : float
        An L2 penalty added to the gradient before Adam (PyTorch's
        ``Adam(weight_decay=...)``, the reference's; not AdamW).
    batch_size : int
        Stars per step (capped at the number of training stars).
    epochs : int
        Passes over the training stars.
    validation_frac : float in [0, 1)
        Stars held out at random; the model keeps the weights of the lowest
        validation loss.  0: no validation, the weights after the last epoch.
    patience : int or None
        Stop after this many epochs without a lower validation loss.
    """

    kind: str = "joint"
    blocks: int = 4
    hidden: tuple = (64, 64, 64)
    bins: int = 8
    bound: float = 3.0
    channels: int | None = None
    label_blocks: int = 4
    init: str = "whiten"
    learning_rate: float = 1e-5
    weight_decay: float = 1e-6
    batch_size: int = 200
    epochs: int = 20
    validation_frac: float = 0.1
    patience: int | None = None

    def __post_init__(self):
        check_choice(self.kind, "config.kind", KINDS)
        check_int(self.blocks, "config.blocks", minimum=1)
        object.__setattr__(self, "hidden", check_widths(self.hidden, "config.hidden"))
        check_int(self.bins, "config.bins", minimum=1)
        check_float(self.bound, "config.bound", low=0.0, open_low=True)
        if self.channels is not None:
            check_int(self.channels, "config.channels", minimum=1)
        check_int(self.label_blocks, "config.label_blocks", minimum=1)
        check_choice(self.init, "config.init", INITS)
        check_float(self.learning_rate, "config.learning_rate", low=0.0, open_low=True)
        check_float(self.weight_decay, "config.weight_decay", low=0.0)
        check_int(self.batch_size, "config.batch_size", minimum=1)
        check_int(self.epochs, "config.epochs", minimum=1)
        check_float(self.validation_frac, "config.validation_frac", low=0.0)
        if not self.validation_frac < 1:
            raise ValueError(f"config.validation_frac: expected a value in [0, 1), found {self.validation_frac!r}")
        if self.patience is not None:
            check_int(self.patience, "config.patience", minimum=1)
            if self.validation_frac == 0:
                raise ValueError("config.patience: early stopping needs validation (config.validation_frac > 0)")

    @classmethod
    def reference(cls, **changes) -> Config:
        """The authors' configuration (module docstring of :mod:`jaxspec.models.flows`), with ``changes``."""
        paper = {
            "blocks": 12,
            "hidden": (1000, 1000, 1000),
            "learning_rate": 5e-6,
            "weight_decay": 1e-6,
            "batch_size": 200,
            "init": "rotation",
        }
        return cls(**{**paper, **changes})
