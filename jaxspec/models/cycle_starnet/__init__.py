r"""Cycle-StarNet: unsupervised domain adaptation between synthetic and observed spectra (O'Briain et al. 2021).

Two unpaired sets of spectra, synthetic ones (an emulator's, with its
model's deficiencies) and observed ones (a survey's, with noise and the
instrument), are encoded into one *shared* latent space by domain encoders
followed by a shared encoder, and observed spectra also into a *split*
latent space of what the synthetic domain lacks:

.. math::

    z_{sh} = E_{sh}(E_{synth}(x_{synth})), \qquad (z_{sh}, z_{sp}) = (E_{sh}, E_{sp})(E_{obs}(x_{obs})),

and decoded back by the mirrored decoders.  A synthetic spectrum sent to
the observed domain, :math:`T_{s\to o}(x) = D_{obs}[D_{sh}(z_{sh}), D_{sp}(z_{sp})]`,
is the synthetic model corrected for the synthetic gap.  Training minimises
(Eq. 1)

.. math::

    L = \lambda_{synth}(L_{rec,synth} + L_{cr,synth}) + \lambda_{obs}(L_{rec,obs} + L_{cr,obs})
      + \lambda_{adv}(L_{adv,synth} + L_{adv,obs}),

within-domain reconstructions, cycle reconstructions :math:`x \to` other
domain :math:`\to x` (weighted mean squared errors, Eqs. 3, 7) and the
adversarial terms of two critics that judge (spectrum, latent) pairs (Eq. 4),
alternating one generator step and one critic step (:mod:`._losses` has
every term).  The paper's architecture (its Table 2) and recipe (Appendix B)
are :class:`Config`'s defaults.

:func:`fit` trains through the engine's multi-group step and loop;
:func:`encode`, :func:`reconstruct` and :func:`transfer` (all four
directions) are the batch verbs; the model saves and loads with
``jaxspec.io``.
"""

from jaxspec.models.cycle_starnet._config import Config, network_lengths, valid_lengths
from jaxspec.models.cycle_starnet._fit import fit, groups, make_optimizer, make_step
from jaxspec.models.cycle_starnet._fit_labels import METHODS, emulate, fit_labels, predict_labels
from jaxspec.models.cycle_starnet._lines import (
    Feature,
    LineJacobians,
    features,
    jacobian_difference,
    line_jacobians,
)
from jaxspec.models.cycle_starnet._losses import Domain, critic_loss, distance, generator_loss, validation_loss
from jaxspec.models.cycle_starnet._model import DIRECTIONS, Model, decode, transfer_one
from jaxspec.models.cycle_starnet._networks import Critics, Generator, Params, init_params, instance_norm, param_shapes
from jaxspec.models.cycle_starnet._predict import Latents, encode, reconstruct, transfer

__all__ = [
    "DIRECTIONS",
    "METHODS",
    "Config",
    "Critics",
    "Domain",
    "Feature",
    "Generator",
    "Latents",
    "LineJacobians",
    "Model",
    "Params",
    "critic_loss",
    "decode",
    "distance",
    "emulate",
    "encode",
    "features",
    "fit",
    "fit_labels",
    "generator_loss",
    "groups",
    "init_params",
    "instance_norm",
    "jacobian_difference",
    "line_jacobians",
    "make_optimizer",
    "make_step",
    "network_lengths",
    "param_shapes",
    "predict_labels",
    "reconstruct",
    "transfer",
    "transfer_one",
    "valid_lengths",
    "validation_loss",
]
