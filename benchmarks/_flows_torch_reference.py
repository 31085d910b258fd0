r"""The default Mendis flow (Ciuca & Ting 2022) in plain PyTorch, the reference of bench_flows.py.

Standalone (torch, numpy, stdlib only); run it with the PyTorch virtual environment::

    /tmp/venvtorch/bin/python benchmarks/_flows_torch_reference.py DIR --epochs 2 --threads 2

``DIR`` holds ``u.npy`` (float32 ``(n, D)``): the standardised data vectors ``x = (S, y)`` that
``bench_flows.py`` also trains the jaxspec flow on.

The architecture is ``flows.Config()``'s, written for this benchmark: ``blocks`` blocks of ActNorm ->
an invertible 1x1 mixing of all ``D`` dimensions in LU form (``y[perm] = L (U x)``, ``L`` unit lower,
``U`` upper with diagonal ``sign * exp(log_scale)``, ``log|det| = sum log_scale``) -> a coupling that
transforms ``b = x[d:]`` by rational-quadratic splines conditioned on ``a = x[:d]``, then ``a``
conditioned on the new ``b`` (``d = D // 2``; ``K`` bins on ``[-B, B]``, identity tails, ``K`` widths,
``K`` heights and ``K - 1`` interior slopes per dimension as distrax parametrises them; conditioner
MLPs with three hidden layers of ``hidden`` units and LeakyReLU(0.2)); standard normal base.  Loss:
the mean negative log-likelihood per star.  ``torch.optim.Adam(lr, weight_decay)`` (L2 added to the
gradient, as the authors' code and ``flows.make_optimizer``).  Each epoch shuffles the stars and drops
the last partial batch.  One warm-up epoch, then ``--epochs`` timed ones, then ``log_prob`` of every
star without gradients (a warm-up pass and ``--epochs`` timed ones); prints one JSON object (times in
seconds) on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MIN_BIN, MIN_SLOPE = 1e-4, 1e-4  # distrax.RationalQuadraticSpline's defaults


def spline_forward(x: torch.Tensor, raw: torch.Tensor, bins: int, bound: float):
    """Monotonic rational-quadratic spline of each entry of ``x (N, n)`` with parameters ``raw (N, n, 3K - 1)``;
    identity outside ``[-bound, bound]``.  Returns ``(y, log dy/dx)``, both ``(N, n)``."""
    k = bins
    span = 2 * bound  # bin sizes in x units, at least MIN_BIN each (distrax's normalisation)
    widths = MIN_BIN + (span - MIN_BIN * k) * torch.softmax(raw[..., :k], dim=-1)
    heights = MIN_BIN + (span - MIN_BIN * k) * torch.softmax(raw[..., k : 2 * k], dim=-1)
    offset = math.log(math.expm1(1 - MIN_SLOPE))  # zero raw parameters give slope 1
    inner = F.softplus(raw[..., 2 * k :] + offset) + MIN_SLOPE
    ones = torch.ones_like(inner[..., :1])
    slopes = torch.cat([ones, inner, ones], dim=-1)
    edge = torch.full_like(widths[..., :1], bound)
    xs = torch.cat([-edge, torch.cumsum(widths[..., :-1], -1) - bound, edge], dim=-1)
    ys = torch.cat([-edge, torch.cumsum(heights[..., :-1], -1) - bound, edge], dim=-1)
    inside = (x > -bound) & (x < bound)
    xc = x.clamp(-bound, bound)
    idx = torch.searchsorted(xs[..., 1:-1].contiguous(), xc[..., None])  # bin of each entry
    pick = lambda t, i=idx: torch.gather(t, -1, i)[..., 0]  # noqa: E731
    x0, x1, y0, y1 = pick(xs), pick(xs, idx + 1), pick(ys), pick(ys, idx + 1)
    d0, d1 = pick(slopes), pick(slopes, idx + 1)
    w, h = x1 - x0, y1 - y0
    s = h / w
    t = (xc - x0) / w
    tt = t * (1 - t)
    denom = s + (d0 + d1 - 2 * s) * tt
    y = y0 + h * (s * t * t + d0 * tt) / denom
    dydx = s * s * (d1 * t * t + 2 * s * tt + d0 * (1 - t) ** 2) / (denom * denom)
    return torch.where(inside, y, x), torch.where(inside, torch.log(dydx), torch.zeros_like(x))


def mlp(n_in: int, hidden: tuple, n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip((n_in, *hidden[:-1]), hidden, strict=True):
        layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
    last = nn.Linear(hidden[-1], n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)  # a new coupling is the identity
    return nn.Sequential(*layers, last)


class Block(nn.Module):
    """ActNorm -> LU 1x1 mixing -> spline coupling of both halves in turn."""

    def __init__(self, dim: int, hidden: tuple, bins: int, bound: float, generator: torch.Generator):
        super().__init__()
        self.dim, self.d, self.bins, self.bound = dim, dim // 2, bins, bound
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)  # q = p @ lower @ upper
        diag = torch.diagonal(upper)
        self.register_buffer("perm", torch.argmax(p, dim=0))  # (lower @ upper)[i] = q[perm[i]]
        self.register_buffer("sign", torch.sign(diag).float())
        self.lower = nn.Parameter(torch.tril(lower, -1).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.lu_log_scale = nn.Parameter(torch.log(torch.abs(diag)).float())
        rest = dim - self.d
        self.first = mlp(self.d, hidden, rest * (3 * bins - 1))
        self.second = mlp(rest, hidden, self.d * (3 * bins - 1))

    def forward(self, x: torch.Tensor):
        n = x.shape[0]
        x = (x - self.loc) * torch.exp(-self.log_scale)
        logdet = -self.log_scale.sum().expand(n)
        lower = torch.tril(self.lower, -1) + torch.eye(self.dim, device=x.device)
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign * torch.exp(self.lu_log_scale))
        lu_x = (x @ upper.T) @ lower.T
        x = torch.empty_like(lu_x).index_copy_(1, self.perm, lu_x)
        logdet = logdet + self.lu_log_scale.sum()
        a, b = x[:, : self.d], x[:, self.d :]
        b, ld_b = spline_forward(b, self.first(a).view(n, -1, 3 * self.bins - 1), self.bins, self.bound)
        a, ld_a = spline_forward(a, self.second(b).view(n, -1, 3 * self.bins - 1), self.bins, self.bound)
        return torch.cat([a, b], dim=1), logdet + ld_a.sum(1) + ld_b.sum(1)


class Flow(nn.Module):
    def __init__(self, dim: int, blocks: int, hidden: tuple, bins: int, bound: float, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.blocks = nn.ModuleList([Block(dim, hidden, bins, bound, generator) for _ in range(blocks)])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        logdet = torch.zeros(x.shape[0])
        for block in self.blocks:
            x, ld = block(x)
            logdet = logdet + ld
        return -0.5 * (x * x).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi) + logdet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64, 64])
    parser.add_argument("--bins", type=int, default=8)
    parser.add_argument("--bound", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--weight-decay", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    u = torch.from_numpy(np.load(args.data / "u.npy").astype(np.float32))
    n, dim = u.shape
    flow = Flow(dim, args.blocks, tuple(args.hidden), args.bins, args.bound, args.seed)
    optimizer = torch.optim.Adam(flow.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps = n // args.batch
    epoch_times, losses = [], []
    for _ in range(args.epochs + 1):
        t0 = time.perf_counter()
        order = torch.randperm(n)
        total = 0.0
        for s in range(steps):
            batch = u[order[s * args.batch : (s + 1) * args.batch]]
            loss = -flow.log_prob(batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss)
        epoch_times.append(time.perf_counter() - t0)
        losses.append(total / steps)
    chunk = 1000
    lp_times = []
    with torch.no_grad():
        for _ in range(args.epochs + 1):
            t0 = time.perf_counter()
            lp = torch.cat([flow.log_prob(u[i : i + chunk]) for i in range(0, n, chunk)])
            lp_times.append(time.perf_counter() - t0)
    med = statistics.median(epoch_times[1:])
    lp_med = statistics.median(lp_times[1:])
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "n": n,
                "dim": dim,
                "steps_per_epoch": steps,
                "epoch_times_s": epoch_times,
                "epoch_median_s": med,
                "samples_per_s": steps * args.batch / med,
                "losses": losses,
                "log_prob_times_s": lp_times,
                "log_prob_per_s": n / lp_med,
                "log_prob_finite": bool(torch.isfinite(lp).all()),
                "parameters": sum(p.numel() for p in flow.parameters()),
            }
        )
    )


if __name__ == "__main__":
    main()
