"""The shared engine: solvers, per-star latent fits, train steps, sharding."""

from jaxspec.optim.latents import FitOptions, GaussianPrior, LatentFit, fit_latents
from jaxspec.optim.train import Checkpoint, Group, TrainResult, Unpaired, make_multi_step, make_train_step, train_loop

__all__ = [
    "Checkpoint",
    "FitOptions",
    "GaussianPrior",
    "Group",
    "LatentFit",
    "TrainResult",
    "Unpaired",
    "fit_latents",
    "make_multi_step",
    "make_train_step",
    "train_loop",
]
