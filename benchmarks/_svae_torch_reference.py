r"""The scatter VAE (Laroche & Speagle 2023, sec. 2.2) train epoch in plain PyTorch, the reference of bench_svae.py.

Standalone (torch, numpy, stdlib only); run it with the PyTorch virtual environment::

    /tmp/venvtorch/bin/python benchmarks/_svae_torch_reference.py DIR --epochs 3 --threads 2

``DIR`` holds ``x.npy``, ``sigma.npy`` and ``mask.npy`` (float32, ``(n, 110)``; mask 1 = used), the
preprocessed coefficients ``bench_svae.py`` also trains the jaxspec model on.

Model: encoder 110 -> 80 -> 50 -> 30 (exact GELU) -> 12 (mean and log-variance of a 6-d Gaussian); decoder
6 -> 30 -> 50 -> 80 (GELU) -> 110; scatter decoder the same with its own weights and a softplus output
:math:`s > 0`.  Loss per star, averaged over the batch, with :math:`N = \sum_i m_i`:

.. math::
    \frac{1}{2N}\sum_i m_i\Big[\frac{(x_i-\hat x_i)^2}{\sigma_i^2+s_i^2} + \log(\sigma_i^2+s_i^2)\Big]
    + \frac{1}{2 n_z}\sum_j (\mu_j^2 + e^{\ell_j} - 1 - \ell_j),

one sample :math:`z = \mu + e^{\ell/2}\epsilon`.  SGD, momentum 0.9, learning rate 0.1 decayed by 0.97 per
epoch.  Each epoch shuffles the stars and drops the last partial batch.  One warm-up epoch, then
``--epochs`` timed ones; prints one JSON object (times in seconds) on the last line of stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

N_COEF, HIDDEN, LATENT = 110, (80, 50, 30), 6


def mlp(sizes: list[int], approximate: str) -> nn.Sequential:
    """Linear layers through ``sizes`` with GELU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU(approximate=approximate))
    return nn.Sequential(*layers)


class ScatterVAE(nn.Module):
    """Encoder, decoder and scatter decoder; ``forward`` returns the batch-mean loss."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.encoder = mlp([N_COEF, *HIDDEN, 2 * LATENT], approximate)
        self.decoder = mlp([LATENT, *HIDDEN[::-1], N_COEF], approximate)
        self.scatter = mlp([LATENT, *HIDDEN[::-1], N_COEF], approximate)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        x_hat = self.decoder(z)
        s = nn.functional.softplus(self.scatter(z))
        var = sigma * sigma + s * s
        n_used = mask.sum(-1)
        chi2 = (mask * ((x - x_hat) ** 2 / var + torch.log(var))).sum(-1) / (2.0 * n_used)
        kl = (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(-1) / (2.0 * LATENT)
        return (chi2 + kl).mean()


def load_weights(model: ScatterVAE, path: str) -> None:
    """Set the weights from an ``.npz`` of ``{net}.{i}.kernel`` ``(in, out)`` and ``{net}.{i}.bias`` (jaxspec's)."""
    with np.load(path) as d, torch.no_grad():
        for net in ("encoder", "decoder", "scatter"):
            layers = [m for m in getattr(model, net) if isinstance(m, nn.Linear)]
            for i, layer in enumerate(layers):
                layer.weight.copy_(torch.from_numpy(d[f"{net}.{i}.kernel"].T))
                layer.bias.copy_(torch.from_numpy(d[f"{net}.{i}.bias"]))


def run_epoch(loss_fn, optimizer, x, sigma, mask, batch_size: int) -> float:
    """One shuffled pass (last partial batch dropped); the mean of the step losses."""
    n = x.shape[0]
    order = torch.randperm(n)
    total = torch.zeros(())
    n_steps = n // batch_size
    for s in range(n_steps):
        idx = order[s * batch_size : (s + 1) * batch_size]
        loss = loss_fn(x[idx], sigma[idx], mask[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return float(total) / n_steps


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="folder with x.npy, sigma.npy, mask.npy")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs after one warm-up epoch")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--gamma", type=float, default=0.97, help="learning-rate decay per epoch")
    ap.add_argument("--gelu", choices=["none", "tanh"], default="none", help="'none': exact (erf) GELU, as jaxspec's")
    ap.add_argument("--params", help="initial weights (.npz, see load_weights); default: PyTorch's init")
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward pass and loss")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    folder = Path(args.data)
    x, sigma, mask = (torch.from_numpy(np.load(folder / f"{k}.npy")).float() for k in ("x", "sigma", "mask"))
    if not x.shape == sigma.shape == mask.shape or x.shape[1] != N_COEF:
        raise ValueError(f"expected x, sigma, mask of shape (n, {N_COEF}), found {x.shape, sigma.shape, mask.shape}")

    model = ScatterVAE(args.gelu)
    if args.params:
        load_weights(model, args.params)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.gamma)
    loss_fn = model
    compile_error = None
    if args.compile:
        try:
            loss_fn = torch.compile(model)
        except Exception as exc:  # reported; the eager model runs instead
            compile_error = f"{type(exc).__name__}: {exc}"[:500]

    t0 = time.perf_counter()
    try:
        losses = [run_epoch(loss_fn, optimizer, x, sigma, mask, args.batch_size)]
    except Exception as exc:  # torch.compile can fail at the first call
        if loss_fn is model:
            raise
        compile_error = f"{type(exc).__name__}: {exc}"[:500]
        loss_fn = model
        losses = [run_epoch(loss_fn, optimizer, x, sigma, mask, args.batch_size)]
    warmup = time.perf_counter() - t0
    scheduler.step()
    times = []
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        losses.append(run_epoch(loss_fn, optimizer, x, sigma, mask, args.batch_size))
        times.append(time.perf_counter() - t0)
        scheduler.step()

    n_steps = x.shape[0] // args.batch_size
    med = statistics.median(times) if times else math.nan
    out = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "n_stars": int(x.shape[0]),
        "batch_size": args.batch_size,
        "steps_per_epoch": n_steps,
        "gelu": args.gelu,
        "initial_weights": args.params or "torch default",
        "compile": args.compile,
        "compiled": args.compile and compile_error is None,
        "compile_error": compile_error,
        "warmup_epoch_s": warmup,
        "epoch_times_s": times,
        "epoch_median_s": med,
        "step_median_ms": 1e3 * med / n_steps,
        "epoch_losses": losses,
        "final_loss": losses[-1],
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
