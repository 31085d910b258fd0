"""The shared engine: solvers, per-star latent fits, train steps, sharding."""
