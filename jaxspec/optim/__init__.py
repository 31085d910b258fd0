"""The shared engine: solvers, per-star latent fits, train steps, sharding."""

from jaxspec.optim.latents import FitOptions, GaussianPrior, LatentFit, fit_latents
from jaxspec.optim.train import Checkpoint, FitResult, Group, fit, make_multi_step, make_train_step

__all__ = [
    "Checkpoint",
    "FitOptions",
    "FitResult",
    "GaussianPrior",
    "Group",
    "LatentFit",
    "fit",
    "fit_latents",
    "make_multi_step",
    "make_train_step",
]
