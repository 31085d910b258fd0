"""Training Cycle-StarNet: alternating generator and critic steps through the engine (Appendix B)."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import numpy as np
import optax

from jaxspec.data._checks import check_key
from jaxspec.models import payne
from jaxspec.models._common import FitResult, on_device
from jaxspec.models.cycle_starnet._config import Config
from jaxspec.models.cycle_starnet._data import check_spectra, inputs, normalisation, weights
from jaxspec.models.cycle_starnet._losses import Domain, critic_loss, generator_loss, validation_loss
from jaxspec.models.cycle_starnet._model import Model
from jaxspec.models.cycle_starnet._networks import graphdefs, init_params
from jaxspec.optim import train
from jaxspec.optim.train import Group, Unpaired, init_groups, make_multi_step, make_validation, validation_split
from jaxspec.typing import Key

__all__ = ["fit", "make_optimizer", "make_step"]


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Adam (``config.betas``) at ``config.learning_rate``, times ``decay_factor`` at each ``decay_at`` step."""
    schedule = optax.piecewise_constant_schedule(
        float(config.learning_rate), {int(i): float(config.decay_factor) for i in config.decay_at}
    )
    return optax.adam(schedule, b1=config.betas[0], b2=config.betas[1])


def make_step(config: Config, *, mesh=None):
    """The compiled iteration: a generator step, then a critic step on the generator's outputs of that pass.

    ``step(params, opt_state, batch, key)``, ``batch`` an ``Unpaired(observed Domain, synthetic Domain)``,
    ``opt_state`` from :func:`jaxspec.optim.train.init_groups` of :func:`groups`.  One step per
    configuration and mesh: fits of the same sizes share its compilations.
    """
    # settings the step does not read (sizes of the run, the data's treatment) are set aside from the key
    step_config = dataclasses.replace(
        config, iterations=1, batch_size=1, crop=(0, 0), norm=None, validation_frac=0.0,
        err_floor=Config.err_floor, err_max=Config.err_max, synthetic_err=Config.synthetic_err,
    )  # fmt: skip
    return _step(step_config, mesh)


@functools.lru_cache(maxsize=8)
def _step(config: Config, mesh):
    return make_multi_step(groups(config), mesh=mesh)


def groups(config: Config) -> tuple[Group, Group]:
    """The two parameter groups: ``generator`` (passes its outputs on) and ``critic``, each with its own Adam."""
    return (
        Group("generator", generator_loss(config), make_optimizer(config), has_aux=True, passes=True),
        Group("critic", critic_loss(config), make_optimizer(config), has_aux=True),
    )


def _domain(spectra, kept, norm, config, observed: bool) -> Domain:
    x, w = inputs(spectra, kept, norm), weights(spectra, kept, norm, config, observed=observed)
    used = np.any(w > 0, axis=1)
    if not used.any():
        name = "spectra" if observed else "synthetic"
        raise ValueError(f"{name}: expected at least one star with a measured pixel, found none")
    return Domain(x[used], w[used])  # a star with nothing measured informs nothing: left out


def _take(d: Domain, rows) -> Domain:
    return Domain(d.x[rows], d.w[rows])


def fit(
    spectra,
    synthetic,
    *,
    key: Key,
    config: Config = Config(),  # noqa: B008 - a frozen dataclass
    emulator: payne.Model | None = None,
    mesh=None,
    checkpoint: train.Checkpoint | None = None,
    progress: bool = True,
) -> FitResult:
    r"""Train Cycle-StarNet on unpaired observed and synthetic spectra (Eqs. 1-7, Appendix B).

    Parameters
    ----------
    spectra : Spectra ``(n_obs, n_pix)``
        The observed domain: continuum-normalised spectra with their errors.
    synthetic : Spectra ``(n_synth, n_pix)``
        Synthetic spectra on the same grid (e.g. ``payne.predict_spectra``
        of catalogue labels); their ``ivar`` only masks (0) or keeps a pixel,
        every kept one has the error ``config.synthetic_err``.
    key : jax.random key
        Validation split (``fold_in(key, 0)``, ``1``), initial weights (2),
        batch order (3), validation (4).
    config : Config
    emulator : payne.Model, optional
        The synthetic domain's emulator (same ``n_pix``): kept in the model
        for label fitting and line finding.
    mesh : jax.sharding.Mesh, optional
        Data parallelism over ``"data"``: the batch size (of each domain) is
        rounded down to a multiple of the device count.
    checkpoint : jaxspec.optim.train.Checkpoint, optional
        Save every ``checkpoint.every`` passes; resume from an existing file
        (bit for bit).
    progress : bool

    Returns
    -------
    FitResult
        ``model`` (the weights after the last iteration, as the authors'
        code keeps); ``history`` one row per pass over the observed spectra:
        ``generator/loss`` (Eq. 1), ``generator/rec_synth``, ``/cycle_synth``,
        ``/rec_obs``, ``/cycle_obs``, ``/adv_synth``, ``/adv_obs``,
        ``critic/loss`` and its ``real_*``/``fake_*`` terms, ``*/grad_norm``,
        ``val_loss`` (held-out distance terms); ``converged`` False (a fixed
        number of iterations, no stopping rule); ``aux``: ``iterations``
        run, ``steps_per_pass``, ``batch_size``.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a cycle_starnet.Config, found {type(config).__name__}")
    check_key(key)
    observed = check_spectra(spectra, getattr(spectra, "n_pix", -1), None, "spectra")
    n_pix, wavelength = observed.n_pix, observed.wavelength
    synthetic = check_spectra(synthetic, n_pix, wavelength, "synthetic")
    if wavelength is None:
        wavelength = synthetic.wavelength
    if emulator is not None:
        if not isinstance(emulator, payne.Model):
            raise TypeError(f"emulator: expected a payne.Model or None, found {type(emulator).__name__}")
        if emulator.n_pix != n_pix:
            raise ValueError(f"emulator: expected {n_pix} pixels (the spectra's grid), found {emulator.n_pix}")
    start, end = config.crop
    n_net = n_pix - start - end
    if n_net < 1:
        raise ValueError(f"config.crop: drops {start + end} of the spectra's {n_pix} pixels, leaving none")
    graphdefs(config, n_net)  # refuses a length the networks do not take, naming valid_lengths
    kept = slice(start, n_pix - end)
    norm = config.norm if config.norm is not None else normalisation(synthetic, kept)
    obs = _domain(observed, kept, norm, config, observed=True)
    syn = _domain(synthetic, kept, norm, config, observed=False)
    if min(len(obs.x), len(syn.x)) < 2:
        raise ValueError(
            f"spectra, synthetic: expected at least 2 usable stars in each domain, found {len(obs.x)} and {len(syn.x)}"
        )
    obs_train, obs_val = validation_split(len(obs.x), config.validation_frac, jax.random.fold_in(key, 0))
    syn_train, syn_val = validation_split(len(syn.x), config.validation_frac, jax.random.fold_in(key, 1))
    data = Unpaired(_take(obs, obs_train), _take(syn, syn_train))
    size = 1 if mesh is None else mesh.devices.size
    batch_size = min(int(config.batch_size), len(obs_train), len(syn_train))
    batch_size -= batch_size % size
    if batch_size == 0:
        raise ValueError(f"spectra, synthetic: fewer training stars than the {size} devices of the mesh")
    steps = len(obs_train) // batch_size
    passes = math.ceil(int(config.iterations) / steps)

    params = init_params(jax.random.fold_in(key, 2), config, n_net)
    step = make_step(config, mesh=mesh)
    validation = None
    if len(obs_val) and len(syn_val):
        validation = make_validation(
            validation_loss(config), Unpaired(_take(obs, obs_val), _take(syn, syn_val)),
            batch_size=max(batch_size, 64), has_aux=True, key=jax.random.fold_in(key, 4),
        )  # fmt: skip
    result = train.train_loop(
        step, params, init_groups(groups(config), params), data, key=jax.random.fold_in(key, 3), epochs=passes,
        batch_size=batch_size, validation=validation, checkpoint=checkpoint, progress=progress,
    )  # fmt: skip
    grid = None if wavelength is None else np.asarray(wavelength)
    norm_arr = np.asarray(norm, np.dtype(obs.x.dtype))
    model = on_device(Model(result.params, norm_arr, emulator, int(n_pix), grid, config))
    aux = {"iterations": passes * steps, "steps_per_pass": steps, "batch_size": batch_size}
    return FitResult(model, result.history, False, aux)
