r"""Cycle-StarNet (O'Briain et al. 2021) in plain PyTorch: the reference side of the Cycle-StarNet benchmark.

Standalone (torch, numpy, stdlib only); run it with the PyTorch virtual environment::

    /tmp/venvtorch/bin/python benchmarks/_cycle_starnet_torch_reference.py train DIR --iterations 20 --threads 2
    /tmp/venvtorch/bin/python benchmarks/_cycle_starnet_torch_reference.py fit DIR --stars 4 --threads 2
    /tmp/venvtorch/bin/python benchmarks/_cycle_starnet_torch_reference.py check DIR [--weights FILE.npz]

Each subcommand prints ONE JSON object on the last line of stdout (times in seconds).

It is the same architecture and training iteration as ``jaxspec.models.cycle_starnet`` (``_config.py``,
``_networks.py``, ``_losses.py``, ``_fit.py``) and as the authors' code (``network.py``, ``training_fns.py``
and ``domain_transfer/fit_labels.py`` of github.com/teaghan/Cycle_SN), with the paper's default sizes.

Architecture
------------
Every convolution unpadded, kernel 7, LeakyReLU(0.1) after every layer but the latent and output read-outs;
Xavier-uniform convolution weights and biases 0.01 (the authors' ``init_weights``; the critics' dense layer
keeps PyTorch's default).  Spectra have 7167 pixels (the authors' ``x[:, 47:]`` of the 7214-pixel grid).

* ``e_synth``, ``e_obs``: Conv1d 1->32 s4, 32->64 s4 (7167 -> 1791 -> 447).
* ``e_sh``: 64->128 s4, 128->256 s2, 256->512 s2 (447 -> 111 -> 53 -> 24), 1x1 conv to 25, non-affine
  InstanceNorm1d (eps 1e-5): :math:`z_{sh}` (25, 24).
* ``e_sp``: 64->32 s4, 32->32 s2, 32->32 s2, 1x1 to ``split_z`` (4), InstanceNorm: :math:`z_{sp}` (4, 24).
* ``d_sh``: ConvTranspose1d 25->512 s2, 512->256 s2, 256->128 s4 (24 -> 53 -> 111 -> 447).
* ``d_sp``: ConvTranspose1d split_z->32 s2, 32->32 s2, 32->32 s4.
* ``d_synth``: ConvTranspose1d 128->64 s4, 64->32 s4 (447 -> 1791 -> 7167), Conv1d 32->1 k1.
* ``d_obs``: the same with 128 + 32 input channels (``d_sh``'s and ``d_sp``'s outputs stacked as channels).
* Critics ``synth`` and ``obs``: spectrum branch Conv1d 1->16->32->64->128->256, k7 s4, LeakyReLU
  (7167 -> 1791 -> 447 -> 111 -> 27 -> 6); latent branch 1x1 convs (25, resp. 25 + split_z, channels) ->32->64
  ->128->256->512, LeakyReLU; both flattened LENGTH-major (as the JAX side's ``(L, C)`` arrays flatten row-major;
  the authors flatten channel-major, which only permutes the dense layer's inputs), concatenated, Linear -> 1.
  The critic returns the logit; the binary cross-entropies are ``softplus(-a)`` (target 1) and ``softplus(a)``
  (target 0), i.e. ``BCEWithLogits`` (the authors' sigmoid + ``BCELoss`` without its log clipping at -100).

One training iteration (``jaxspec/models/cycle_starnet/_losses.py``; the authors' ``train_iter``)
--------------------------------------------------------------------------------------------------
A batch of B observed ``(x_o, w_o)`` and B synthetic ``(x_s, w_s)`` rows ``(B, 7167)`` (normalised flux and
distance weights mask/error); :math:`d(\hat x, x, w) = \mathrm{mean}((w(\hat x - x))^2)`.  Generator pass::

    z_sh_s = E_sh(E_synth(x_s));  z_sh_o, z_sp_o = E_sh, E_sp (E_obs(x_o))
    x_ss = D_synth(D_sh(z_sh_s));  x_oo = D_obs([D_sh(z_sh_o), D_sp(z_sp_o)])
    x_so = D_obs([D_sh(z_sh_s), D_sp(z_sp_o)])   (synthetic row i borrows observed row i's z_sp)
    x_os = D_synth(D_sh(z_sh_o))
    z_sh_so, z_sp_so = encode_obs(x_so);  x_sos = D_synth(D_sh(z_sh_so))
    x_oso = D_obs([D_sh(E_sh(E_synth(x_os))), D_sp(z_sp_o)])

``L_G = 3 (d(x_ss, x_s) + d(x_sos, x_s)) + 9 (d(x_oo, x_o) + d(x_oso, x_o))
+ 1 (mean softplus(-C_s(x_os, z_sh_o)) + mean softplus(-C_o(x_so, [z_sh_s, z_sp_so])))``; one Adam step
(lr 1e-4, betas (0.5, 0.999)) over every encoder and decoder weight.  Then the critics' step on the DETACHED
tensors of that same pass (computed before the generator's update, as the authors' ``train_iter`` does):
``L_C = softplus(-C_s(x_ss, z_sh_s)) + softplus(C_s(x_os, z_sh_o)) + softplus(-C_o(x_oo, [z_sh_o, z_sp_o]))
+ softplus(C_o(x_so, [z_sh_s, z_sp_so]))`` (each a batch mean), its own Adam (1e-4, (0.5, 0.999)) over both
critics.  Both learning rates decay by 0.7 at 50k, 100k, 150k and 200k iterations (``MultiStepLR``; it does
not trigger in a benchmark).

By default the generator's backward pass computes no gradient for the critics' weights (they are frozen
during it), as the JAX side differentiates the generator loss with respect to the generator's weights only;
``--critic-grads`` keeps the authors' behaviour (their backward also fills the critics' ``.grad``, which
their critic step then zeroes).

Subcommands
-----------
``train DIR --iterations N --threads T [--batch 8]``: ``DIR`` holds ``obs_x.npy``, ``obs_w.npy``,
``syn_x.npy``, ``syn_w.npy`` (float32 ``(n, 7167)`` each).  Networks from ``torch.manual_seed(0)``; each
iteration draws B distinct random rows of each domain (``numpy.random.default_rng(0)``).  One untimed warm-up
iteration, then N timed ones.  JSON: ``iter_s_median``, ``iter_s_mean``, ``iters_per_s`` (1 / median),
``threads``, ``torch``, ``generator_loss_last`` (and ``critic_loss_last``, ``iterations``, ``batch``,
``device``).

``fit DIR --stars K --threads T``: the authors' ``fit_labels.py`` recipe, one star at a time.  ``DIR``
holds the per-pixel Payne emulator (Ting et al. 2019 format) ``emu_w0.npy`` (7214, 5, 5), ``emu_b0.npy``
(7214, 5), ``emu_w1.npy`` (7214, 5), ``emu_b1.npy`` (7214,),
:math:`f_l(s) = \sum_h w1_{lh}\,\sigma(\sum_m w0_{lhm} s_m + b0_{lh}) + b1_l` on scaled labels
:math:`s \in [-1/2, 1/2]^5`; ``norm.npy`` (mean, std); ``fit_flux.npy``, ``fit_ivar.npy`` (float32
``(K, 7214)``); ``fit_zsp.npy`` (float32 ``(K, 24, split_z)``, the JAX layout, length first; transposed here
to torch's ``(split_z, 24)``); ``fit_start.npy`` ``(K, 5)`` starting scaled labels.  Networks: fresh, from
``torch.manual_seed(0)`` (the timing does not depend on the weights' values), frozen (``--network-grads``
keeps the authors' behaviour: they leave ``requires_grad`` on, so every backward also computes the networks'
weight gradients).  Per star: ``torch.optim.LBFGS([s], lr=0.01, max_iter=100, line_search_fn="strong_wolfe")``,
10 outer ``step``s, each followed by one more closure evaluation for the loss (as the authors do), and their
restart from the starting labels on a NaN loss (at most 5 times); objective
:math:`\sum_{l \ge 47} \iota_l (f_l - T_{s\to o}(s, z_{sp})_l)^2`,
:math:`T_{s\to o}(s, z_{sp}) = D_{obs}([D_{sh}(E_{sh}(E_{synth}(x))), D_{sp}(z_{sp})])\cdot\mathrm{std}
+ \mathrm{mean}` with :math:`x = ((\mathrm{emulator}(s) - \mathrm{mean}) / \mathrm{std})_{47:}`.
The whole loop is timed (one untimed objective evaluation first).  JSON: ``stars_per_s``, ``s_per_star``,
``threads`` (and ``torch``, ``stars``, ``seconds``, ``loss_mean``, ``nan_restarts``, ``objective_evals``:
objective evaluations in the timed loop, each a forward and a backward pass).

``check DIR [--weights FILE.npz] [--batch 8] [--double]``: the networks from ``torch.manual_seed(0)`` (or the
npz's weights), ONE generator pass on rows ``0..B-1`` of both domains; JSON of the six loss terms
``rec_synth``, ``cycle_synth``, ``rec_obs``, ``cycle_obs``, ``adv_synth``, ``adv_obs`` (the JAX side's
metric names), plus ``generator_loss`` and the critics' ``real_synth``, ``fake_synth``, ``real_obs``,
``fake_obs`` and ``critic_loss`` on that pass.

Weights npz (``--weights``)
---------------------------
Keys ``generator/<net>/layer_<i>/kernel`` and ``.../bias`` for ``<net>`` in ``e_synth, e_obs, e_sh, e_sp,
d_sh, d_sp, d_synth, d_obs``, ``generator/<net>/out/kernel`` and ``.../out/bias`` for the 1x1 read-outs
(``e_sh``, ``e_sp``, ``d_synth``, ``d_obs``); ``critic/<synth|obs>/x/layer_<i>/...``,
``critic/<synth|obs>/z/layer_<i>/...``, ``critic/<synth|obs>/dense/kernel`` ``(n_in, 1)`` and ``.../bias``.
Layouts (flax):

* Conv kernel ``(k, c_in, c_out)``: torch ``Conv1d.weight (c_out, c_in, k) = kernel.transpose(2, 1, 0)``.
* ConvTranspose kernel ``(k, c_in, c_out)`` (flax ``transpose_kernel=False``: no flip, i.e. torch's
  ``ConvTranspose1d`` with the kernel flipped along k): torch ``weight (c_in, c_out, k) =
  kernel[::-1].transpose(1, 2, 0)``.
* Dense kernel ``(n_in, 1)``, features ordered as the JAX side flattens them (spectrum branch ``(6, 256)``
  length-major, then latent branch ``(24, 512)`` length-major; this script flattens its ``(C, L)`` tensors
  after a transpose, so the order is the same): torch ``Linear.weight (1, n_in) = kernel.T``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_FULL = 7214  # the APOGEE grid of the emulator
CROP = 47  # the authors' x[:, 47:]
N_PIX = N_FULL - CROP  # 7167
KERNEL = 7
SLOPE = 0.1
DOMAIN = ((32, 4), (64, 4))
SHARED = ((128, 4), (256, 2), (512, 2))
SPLIT = ((32, 4), (32, 2), (32, 2))
SHARED_Z = 25
SPLIT_Z = 4
CRITIC_X = (16, 32, 64, 128, 256)
CRITIC_STRIDE = 4
CRITIC_Z = (32, 64, 128, 256, 512)
NORM_EPS = 1e-5
BIAS_INIT = 0.01
WEIGHT_SYNTH, WEIGHT_OBS, WEIGHT_ADV, WEIGHT_CRITIC = 3.0, 9.0, 1.0, 1.0
LR, BETAS = 1e-4, (0.5, 0.999)
DECAY_AT, DECAY = (50_000, 100_000, 150_000, 200_000), 0.7
GENERATOR_NETS = ("e_synth", "e_obs", "e_sh", "e_sp", "d_sh", "d_sp", "d_synth", "d_obs")
LOSS_TERMS = ("rec_synth", "cycle_synth", "rec_obs", "cycle_obs", "adv_synth", "adv_obs")


def conv_length(n: int, kernel: int, stride: int) -> int:
    """Output length of an unpadded convolution."""
    return (n - kernel) // stride + 1


def init_conv(m: nn.Module) -> None:
    """The authors' ``init_weights``: Xavier-uniform convolution weights, biases 0.01."""
    if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
        nn.init.xavier_uniform_(m.weight)
        nn.init.constant_(m.bias, BIAS_INIT)


class Stack(nn.Module):
    """Convolutions (or transposed ones) each followed by LeakyReLU(0.1), then an optional 1x1 read-out and an
    optional non-affine instance norm (the encoders' latents).  Signals are ``(B, C, L)``."""

    def __init__(self, c_in: int, layers, kernel: int, *, transpose: bool, out: int | None = None, norm=False):
        super().__init__()
        cls = nn.ConvTranspose1d if transpose else nn.Conv1d
        convs = []
        for c_out, stride in layers:
            convs.append(cls(c_in, c_out, kernel, stride))
            c_in = c_out
        self.layers = nn.ModuleList(convs)
        self.out = None if out is None else nn.Conv1d(c_in, out, 1, 1)
        self.norm = nn.InstanceNorm1d(out, eps=NORM_EPS, affine=False) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.layers:
            x = F.leaky_relu(conv(x), SLOPE)
        if self.out is not None:
            x = self.out(x)
            if self.norm is not None:
                x = self.norm(x)
        return x


class Critic(nn.Module):
    """Spectrum branch (strided convolutions), latent branch (1x1 convolutions), dense logit."""

    def __init__(self, z_channels: int, n_pix: int = N_PIX):
        super().__init__()
        self.x = Stack(1, [(f, CRITIC_STRIDE) for f in CRITIC_X], KERNEL, transpose=False)
        self.z = Stack(z_channels, [(f, 1) for f in CRITIC_Z], 1, transpose=False)
        n_x = n_pix
        for _ in CRITIC_X:
            n_x = conv_length(n_x, KERNEL, CRITIC_STRIDE)
        n_z = latent_length(n_pix)
        self.dense = nn.Linear(n_x * CRITIC_X[-1] + n_z * CRITIC_Z[-1], 1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The logits ``(B,)`` of spectra ``(B, n)`` and latents ``(B, C, n_z)``."""
        b = x.shape[0]
        fx = self.x(x.unsqueeze(1)).transpose(1, 2).reshape(b, -1)  # length-major, as the JAX side
        fz = self.z(z).transpose(1, 2).reshape(b, -1)
        return self.dense(torch.cat([fx, fz], dim=1)).squeeze(1)


def latent_length(n_pix: int) -> int:
    n = n_pix
    for _, s in DOMAIN + SHARED:
        n = conv_length(n, KERNEL, s)
    return n


class Generator(nn.Module):
    """The encoders and decoders (the paper's defaults, split latent space of ``split_z`` channels)."""

    def __init__(self, split_z: int = SPLIT_Z):
        super().__init__()
        self.e_synth = Stack(1, DOMAIN, KERNEL, transpose=False)
        self.e_obs = Stack(1, DOMAIN, KERNEL, transpose=False)
        self.e_sh = Stack(DOMAIN[-1][0], SHARED, KERNEL, transpose=False, out=SHARED_Z, norm=True)
        self.e_sp = Stack(DOMAIN[-1][0], SPLIT, KERNEL, transpose=False, out=split_z, norm=True)
        # the decoders mirror the encoders: their (filters, stride) pairs in reverse order, e.g.
        # d_sh: 25->512 s2, 512->256 s2, 256->128 s4; d_synth: 128->64 s4, 64->32 s4
        self.d_sh = Stack(SHARED_Z, SHARED[::-1], KERNEL, transpose=True)
        self.d_sp = Stack(split_z, SPLIT[::-1], KERNEL, transpose=True)
        d_dom = DOMAIN[::-1]
        self.d_synth = Stack(SHARED[0][0], d_dom, KERNEL, transpose=True, out=1)
        self.d_obs = Stack(SHARED[0][0] + SPLIT[0][0], d_dom, KERNEL, transpose=True, out=1)

    def encode_synth(self, x):
        return self.e_sh(self.e_synth(x.unsqueeze(1)))

    def encode_obs(self, x):
        h = self.e_obs(x.unsqueeze(1))
        return self.e_sh(h), self.e_sp(h)

    def decode_synth(self, z_sh):
        return self.d_synth(self.d_sh(z_sh)).squeeze(1)

    def decode_obs(self, z_sh, z_sp):
        return self.d_obs(torch.cat([self.d_sh(z_sh), self.d_sp(z_sp)], dim=1)).squeeze(1)


class Critics(nn.Module):
    def __init__(self, split_z: int = SPLIT_Z):
        super().__init__()
        self.synth = Critic(SHARED_Z)
        self.obs = Critic(SHARED_Z + split_z)


def _check_layers(gen: Generator) -> None:
    """The layer sizes the brief names (a guard on the mirroring above)."""
    got = {name: [(m.in_channels, m.out_channels, m.stride[0]) for m in getattr(gen, name).layers]
           for name in ("d_sh", "d_sp", "d_synth", "d_obs")}  # fmt: skip
    want = {
        "d_sh": [(25, 512, 2), (512, 256, 2), (256, 128, 4)],
        "d_sp": [(gen.e_sp.out.out_channels, 32, 2), (32, 32, 2), (32, 32, 4)],
        "d_synth": [(128, 64, 4), (64, 32, 4)],
        "d_obs": [(160, 64, 4), (64, 32, 4)],
    }
    if got != want:
        raise AssertionError(f"decoder layers {got} != {want}")


def build(seed: int = 0, split_z: int = SPLIT_Z) -> tuple[Generator, Critics]:
    torch.manual_seed(seed)
    gen, crit = Generator(split_z), Critics(split_z)
    gen.apply(init_conv)
    crit.apply(init_conv)
    _check_layers(gen)
    return gen, crit


# -- weights from the JAX side ------------------------------------------------------------------


def _stack_tensors(stack: Stack, prefix: str):
    """``(key, torch parameter, kind)`` of every weight of a Stack under its npz prefix."""
    transposed = lambda m: isinstance(m, nn.ConvTranspose1d)  # noqa: E731
    for i, conv in enumerate(stack.layers):
        yield f"{prefix}/layer_{i}/kernel", conv.weight, "convT" if transposed(conv) else "conv"
        yield f"{prefix}/layer_{i}/bias", conv.bias, "bias"
    if stack.out is not None:
        yield f"{prefix}/out/kernel", stack.out.weight, "conv"
        yield f"{prefix}/out/bias", stack.out.bias, "bias"


def load_weights(gen: Generator, crit: Critics, path: str) -> None:
    """Set every weight from the npz (layouts in the module docstring); every key must be used."""
    entries = []
    for name in GENERATOR_NETS:
        entries += list(_stack_tensors(getattr(gen, name), f"generator/{name}"))
    for name in ("synth", "obs"):
        c = getattr(crit, name)
        entries += list(_stack_tensors(c.x, f"critic/{name}/x"))
        entries += list(_stack_tensors(c.z, f"critic/{name}/z"))
        entries += [(f"critic/{name}/dense/kernel", c.dense.weight, "dense"),
                    (f"critic/{name}/dense/bias", c.dense.bias, "bias")]  # fmt: skip
    with np.load(path) as d, torch.no_grad():
        keys = set(d.files)
        missing = [k for k, _, _ in entries if k not in keys]
        if missing:
            raise KeyError(f"{path}: missing {missing}")
        for key, param, kind in entries:
            a = np.asarray(d[key])
            if kind == "conv":
                a = a.transpose(2, 1, 0)
            elif kind == "convT":
                a = a[::-1].transpose(1, 2, 0)
            elif kind == "dense":
                a = a.T
            if tuple(a.shape) != tuple(param.shape):
                raise ValueError(f"{key}: shape {a.shape} after the layout change, expected {tuple(param.shape)}")
            param.copy_(torch.from_numpy(np.ascontiguousarray(a)).to(param.dtype))
        unused = sorted(keys - {k for k, _, _ in entries})
        if unused:
            raise KeyError(f"{path}: keys not used: {unused}")


# -- one iteration ------------------------------------------------------------------------------


def distance(pred, target, w):
    return torch.mean(torch.square(w * (pred - target)))


def generator_pass(gen: Generator, crit: Critics, xo, wo, xs, ws):
    """Every spectrum and latent of one generator pass, the six loss terms and the generator loss."""
    z_sh_s = gen.encode_synth(xs)
    z_sh_o, z_sp_o = gen.encode_obs(xo)
    x_ss = gen.decode_synth(z_sh_s)
    x_oo = gen.decode_obs(z_sh_o, z_sp_o)
    x_so = gen.decode_obs(z_sh_s, z_sp_o)
    x_os = gen.decode_synth(z_sh_o)
    z_sh_so, z_sp_so = gen.encode_obs(x_so)
    x_sos = gen.decode_synth(z_sh_so)
    x_oso = gen.decode_obs(gen.encode_synth(x_os), z_sp_o)
    out = {"x_ss": x_ss, "x_oo": x_oo, "x_so": x_so, "x_os": x_os,
           "z_sh_s": z_sh_s, "z_sh_o": z_sh_o, "z_sp_o": z_sp_o, "z_sp_so": z_sp_so}  # fmt: skip
    terms = {
        "rec_synth": distance(x_ss, xs, ws),
        "cycle_synth": distance(x_sos, xs, ws),
        "rec_obs": distance(x_oo, xo, wo),
        "cycle_obs": distance(x_oso, xo, wo),
        "adv_synth": torch.mean(F.softplus(-crit.synth(x_os, z_sh_o))),
        "adv_obs": torch.mean(F.softplus(-crit.obs(x_so, torch.cat([z_sh_s, z_sp_so], dim=1)))),
    }
    total = (WEIGHT_SYNTH * (terms["rec_synth"] + terms["cycle_synth"])
             + WEIGHT_OBS * (terms["rec_obs"] + terms["cycle_obs"])
             + WEIGHT_ADV * (terms["adv_synth"] + terms["adv_obs"]))  # fmt: skip
    return out, terms, total


def critic_pass(crit: Critics, out: dict):
    """The critics' loss terms and loss on a generator pass's (detached) tensors."""
    o = {k: v.detach() for k, v in out.items()}
    terms = {
        "real_synth": torch.mean(F.softplus(-crit.synth(o["x_ss"], o["z_sh_s"]))),
        "fake_synth": torch.mean(F.softplus(crit.synth(o["x_os"], o["z_sh_o"]))),
        "real_obs": torch.mean(F.softplus(-crit.obs(o["x_oo"], torch.cat([o["z_sh_o"], o["z_sp_o"]], dim=1)))),
        "fake_obs": torch.mean(F.softplus(crit.obs(o["x_so"], torch.cat([o["z_sh_s"], o["z_sp_so"]], dim=1)))),
    }
    return terms, WEIGHT_CRITIC * sum(terms.values())


class Trainer:
    """Both Adams and their MultiStepLR decays; ``step`` is one full iteration (generator, then critics)."""

    def __init__(self, gen: Generator, crit: Critics, critic_grads: bool = False):
        self.gen, self.crit, self.critic_grads = gen, crit, critic_grads
        self.opt_g = torch.optim.Adam(gen.parameters(), lr=LR, betas=BETAS, weight_decay=0)
        self.opt_c = torch.optim.Adam(crit.parameters(), lr=LR, betas=BETAS, weight_decay=0)
        self.sched_g = torch.optim.lr_scheduler.MultiStepLR(self.opt_g, milestones=list(DECAY_AT), gamma=DECAY)
        self.sched_c = torch.optim.lr_scheduler.MultiStepLR(self.opt_c, milestones=list(DECAY_AT), gamma=DECAY)

    def step(self, xo, wo, xs, ws) -> tuple[float, float]:
        self.crit.requires_grad_(self.critic_grads)
        out, _, total = generator_pass(self.gen, self.crit, xo, wo, xs, ws)
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        self.sched_g.step()
        self.crit.requires_grad_(True)
        _, closs = critic_pass(self.crit, out)
        self.opt_c.zero_grad(set_to_none=True)
        closs.backward()
        self.opt_c.step()
        self.sched_c.step()
        return total.detach(), closs.detach()


# -- subcommands --------------------------------------------------------------------------------


def _load_domains(folder: Path, dtype, device):
    arrays = {}
    for k in ("obs_x", "obs_w", "syn_x", "syn_w"):
        a = np.load(folder / f"{k}.npy")
        if a.ndim != 2 or a.shape[1] != N_PIX:
            raise ValueError(f"{k}.npy: expected shape (n, {N_PIX}), found {a.shape}")
        arrays[k] = torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)
    if arrays["obs_x"].shape != arrays["obs_w"].shape or arrays["syn_x"].shape != arrays["syn_w"].shape:
        raise ValueError("obs_x/obs_w or syn_x/syn_w: shapes differ")
    return arrays


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cmd_train(args) -> dict:
    device = torch.device(args.device)
    data = _load_domains(Path(args.data), torch.float32, device)
    n_o, n_s = data["obs_x"].shape[0], data["syn_x"].shape[0]
    b = args.batch
    if b > min(n_o, n_s):
        raise ValueError(f"--batch {b}: more than the {min(n_o, n_s)} rows of the smaller domain")
    gen, crit = build(0)
    gen.to(device)
    crit.to(device)
    trainer = Trainer(gen, crit, critic_grads=args.critic_grads)
    rng = np.random.default_rng(0)
    n_iter = args.iterations + 1
    rows = [(torch.from_numpy(rng.choice(n_o, b, replace=False)).to(device),
             torch.from_numpy(rng.choice(n_s, b, replace=False)).to(device)) for _ in range(n_iter)]  # fmt: skip
    times = []
    g_loss = c_loss = None
    for i, (ro, rs) in enumerate(rows):
        _sync(device)
        t0 = time.perf_counter()
        g_loss, c_loss = trainer.step(data["obs_x"][ro], data["obs_w"][ro], data["syn_x"][rs], data["syn_w"][rs])
        _sync(device)
        dt = time.perf_counter() - t0
        if i > 0:  # the first is the warm-up
            times.append(dt)
        if args.verbose:
            print(f"iteration {i}{' (warm-up)' if i == 0 else ''}: {dt:.3f} s, generator loss {float(g_loss):.5g}")
    median = statistics.median(times)
    return {
        "iter_s_median": median,
        "iter_s_mean": statistics.fmean(times),
        "iters_per_s": 1.0 / median,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "generator_loss_last": float(g_loss),
        "critic_loss_last": float(c_loss),
        "iterations": args.iterations,
        "batch": b,
        "device": str(device),
        "critic_grads_in_generator_step": bool(args.critic_grads),
    }


class Emulator:
    """The per-pixel Payne emulator (Ting et al. 2019): flux ``(7214,)`` of scaled labels ``(1, 5)``."""

    def __init__(self, folder: Path, device):
        load = lambda k: torch.from_numpy(np.load(folder / f"emu_{k}.npy").astype(np.float32)).to(device)  # noqa: E731
        self.w0, self.b0, self.w1, self.b1 = load("w0"), load("b0"), load("w1"), load("b1")
        if self.w0.shape[0] != N_FULL:
            raise ValueError(f"emu_w0.npy: expected {N_FULL} pixels, found {tuple(self.w0.shape)}")

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        hidden = torch.sigmoid(torch.einsum("lhm,bm->blh", self.w0, s) + self.b0)
        return torch.einsum("blh,lh->bl", hidden, self.w1) + self.b1


def cmd_fit(args) -> dict:
    device = torch.device(args.device)
    folder = Path(args.data)
    emulator = Emulator(folder, device)
    mean, std = (float(v) for v in np.load(folder / "norm.npy"))
    k = args.stars
    flux_all, ivar_all = np.load(folder / "fit_flux.npy"), np.load(folder / "fit_ivar.npy")
    zsp_all, start_all = np.load(folder / "fit_zsp.npy"), np.load(folder / "fit_start.npy")
    if k > min(len(flux_all), len(ivar_all), len(zsp_all), len(start_all)):
        raise ValueError(f"--stars {k}: more than the stars in {folder}")
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(device)  # noqa: E731
    flux, ivar = t(flux_all[:k, CROP:]), t(ivar_all[:k, CROP:])
    z_sp = t(np.transpose(zsp_all[:k], (0, 2, 1)))  # (K, split_z, 24)
    start = t(start_all[:k])
    gen, _ = build(0, split_z=z_sp.shape[1])
    gen.to(device).eval()
    gen.requires_grad_(bool(args.network_grads))

    def y_to_obs(s, zsp):
        """The authors' ``y_to_obs``, de-normalised: T_{s->o}(emulator(s), z_sp) on the 7167 pixels."""
        x = ((emulator(s) - mean) / std)[:, CROP:]
        return gen.decode_obs(gen.encode_synth(x), zsp) * std + mean

    n_eval = [0]

    def objective(s, i):
        n_eval[0] += 1
        return torch.sum(ivar[i] * torch.square(flux[i] - y_to_obs(s, z_sp[i : i + 1])[0]))

    def fit_one(i):
        """The authors' ``least_squares_fit``: 10 L-BFGS steps; on a NaN loss restart (at most 5 times)."""
        params = nn.Parameter(start[i : i + 1].clone())
        orig = params.detach().clone()
        nans = 0
        while True:
            optimizer = torch.optim.LBFGS([params], lr=0.01, max_iter=100, line_search_fn="strong_wolfe")

            def closure(optimizer=optimizer):
                if torch.is_grad_enabled():
                    optimizer.zero_grad()
                loss = objective(params, i)
                if loss.requires_grad:
                    loss.backward()
                return loss

            for _ in range(10):
                optimizer.step(closure)
                min_loss = closure().item()
            if not math.isnan(min_loss):
                return min_loss, nans
            params.data = orig.clone()
            nans += 1
            if nans > 5:
                return min_loss, nans

    with torch.no_grad():  # warm-up: one untimed evaluation
        objective(start[:1], 0)
    _sync(device)
    t0 = time.perf_counter()
    losses, restarts = [], 0
    for i in range(k):
        loss, nans = fit_one(i)
        losses.append(loss)
        restarts += nans
        if args.verbose:
            print(f"star {i}: loss {loss:.6g}, {time.perf_counter() - t0:.2f} s so far")
    _sync(device)
    seconds = time.perf_counter() - t0
    return {
        "stars_per_s": k / seconds,
        "s_per_star": seconds / k,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "stars": k,
        "seconds": seconds,
        "loss_mean": float(np.mean(losses)),
        "nan_restarts": restarts,
        "objective_evals": n_eval[0] - 1,
        "network_grads": bool(args.network_grads),
        "device": str(device),
    }


def cmd_check(args) -> dict:
    dtype = torch.float64 if args.double else torch.float32
    device = torch.device(args.device)
    data = _load_domains(Path(args.data), dtype, device)
    gen, crit = build(0)
    if args.weights:
        load_weights(gen, crit, args.weights)
    gen.to(device=device, dtype=dtype)
    crit.to(device=device, dtype=dtype)
    b = args.batch
    with torch.no_grad():
        out, terms, total = generator_pass(
            gen, crit, data["obs_x"][:b], data["obs_w"][:b], data["syn_x"][:b], data["syn_w"][:b]
        )
        cterms, closs = critic_pass(crit, out)
    result = {k: float(terms[k]) for k in LOSS_TERMS}
    result["generator_loss"] = float(total)
    result.update({k: float(v) for k, v in cterms.items()})
    result["critic_loss"] = float(closs)
    result.update({"batch": b, "dtype": str(dtype).removeprefix("torch."), "weights": args.weights or "seed 0",
                   "torch": torch.__version__})  # fmt: skip
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("data", help="folder of the .npy inputs (see the module docstring)")
    common.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads")
    common.add_argument("--device", default="cpu", help="torch device (default cpu)")
    common.add_argument("--verbose", action="store_true")
    p = sub.add_parser("train", parents=[common], help="time training iterations")
    p.add_argument("--iterations", type=int, default=10, help="timed iterations after one warm-up")
    p.add_argument("--batch", type=int, default=8, help="spectra of each domain per iteration")
    p.add_argument(
        "--critic-grads",
        action="store_true",
        help="also compute the critics' gradients in the generator's backward (the authors' code)",
    )
    p = sub.add_parser("fit", parents=[common], help="time the authors' per-star L-BFGS label fits")
    p.add_argument("--stars", type=int, default=4)
    p.add_argument(
        "--network-grads", action="store_true", help="leave requires_grad on the networks' weights (the authors' code)"
    )
    p = sub.add_parser("check", parents=[common], help="one generator pass on rows 0..B-1: the loss terms")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--weights", help="npz of the JAX side's weights (see the module docstring)")
    p.add_argument("--double", action="store_true", help="float64 (weights and data)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error("--threads: expected at least 1")
    torch.set_num_threads(args.threads)
    result = {"train": cmd_train, "fit": cmd_fit, "check": cmd_check}[args.cmd](args)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
