r"""Figures of Cycle-StarNet (O'Briain et al. 2021): training, the synthetic gap, recovered lines.

:func:`training_history` is the paper's Fig. B1 (distance terms above, adversarial terms below);
:func:`residuals` its Figs. 5-8: each star's residual against a model, normalised by its error
(or relative to the reference), across wavelength, with the pixel-wise mean (red) and mean absolute
(orange) residual and the bias and scatter in the title, for one or more models side by side;
:func:`missing_lines` its Fig. 12: the synthetic spectrum, the transferred one with the truth, their
difference with the found features coloured by label, and the Jacobian differences per label.
"""

from __future__ import annotations

import numpy as np

from jaxspec.plots._mpl import broken_line, gap_positions, require_matplotlib

__all__ = ["missing_lines", "residuals", "training_history"]

_DISTANCES = (("rec_synth", "rec. synth"), ("cycle_synth", "cycle synth"), ("rec_obs", "rec. obs"),
              ("cycle_obs", "cycle obs"))  # fmt: skip
_ADVERSARIAL = (("generator/adv_synth", "generator: synth"), ("generator/adv_obs", "generator: obs"),
                ("critic/real_synth", "critic: real synth"), ("critic/fake_synth", "critic: fake synth"),
                ("critic/real_obs", "critic: real obs"), ("critic/fake_obs", "critic: fake obs"))  # fmt: skip


def training_history(fit):
    """Distance terms (top, log scale) and adversarial terms (bottom) per pass (Fig. B1).

    ``fit``: the ``FitResult`` of :func:`jaxspec.models.cycle_starnet.fit`.  Returns the ``Figure``; its
    first ``Axes`` has one line per distance term (``rec_synth``, ``cycle_synth``, ``rec_obs``,
    ``cycle_obs``, then ``val_loss`` when there is one), its second one per adversarial term.
    """
    plt = require_matplotlib()
    history = getattr(fit, "history", None)
    if not isinstance(history, dict) or "generator/rec_obs" not in history:
        raise TypeError(f"fit: expected the FitResult of cycle_starnet.fit, found {type(fit).__name__}")
    steps = int(fit.aux.get("steps_per_pass", 1)) if isinstance(fit.aux, dict) else 1
    x = (np.arange(len(history["generator/rec_obs"])) + 1) * steps
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.0, 5.2), sharex=True, layout="constrained")
    for key, name in _DISTANCES:
        top.plot(x, np.asarray(history[f"generator/{key}"], np.float64), "o-", ms=3, label=name)
    if "val_loss" in history:
        top.plot(x, np.asarray(history["val_loss"], np.float64), "k--", lw=1, label="validation (weighted sum)")
    top.set_yscale("log")
    top.set_ylabel("distance (weighted MSE)")
    top.legend(fontsize=7, ncol=2)
    for key, name in _ADVERSARIAL:
        if key in history:
            bottom.plot(x, np.asarray(history[key], np.float64), "-", lw=1.2, label=name)
    bottom.axhline(np.log(2.0), color="0.6", lw=0.8, ls=":", label="log 2 (undecided critic)")
    bottom.set_xlabel("iteration")
    bottom.set_ylabel("binary cross-entropy")
    bottom.legend(fontsize=7, ncol=2)
    return fig


def residuals(wavelength, observed, models: dict, *, ivar=None, relative: bool = False, ylim=None):
    r"""Residuals of many stars against one or more models across wavelength, one panel per model.

    Parameters
    ----------
    wavelength : array ``(L,)``
    observed : array ``(n, L)``
        The reference spectra (observed flux, or the original synthetic spectra).
    models : dict of str to array ``(n, L)``
        Each model's spectra of the same stars (e.g. ``{"Eq. 9": ..., "Eq. 11": ...}``).
    ivar : array ``(n, L)``, optional
        Inverse variances: residuals are :math:`(f - \hat f)\sqrt{\iota}` (masked pixels left out).
    relative : bool
        Without ``ivar``: :math:`(\hat f - f) / f` (the paper's Fig. 5).

    Returns
    -------
    matplotlib.figure.Figure
        One ``Axes`` per model: a 2-D histogram of every residual, the pixel-wise mean (``lines[0]``,
        red) and mean absolute residual (``lines[1]``, orange); the title gives the mean (bias) and the
        half 16-84 percentile range (scatter), the paper's statistics.
    """
    plt = require_matplotlib()
    wave = np.asarray(wavelength, np.float64)
    obs = np.asarray(observed, np.float64)
    if obs.ndim != 2 or obs.shape[1] != wave.size:
        raise ValueError(f"observed: expected shape (n, {wave.size}), found {obs.shape}")
    if not isinstance(models, dict) or not models:
        raise TypeError("models: expected a non-empty dict of name -> spectra (n, L)")
    w = None if ivar is None else np.asarray(ivar, np.float64)
    gaps = gap_positions(wave)
    fig, axes = plt.subplots(len(models), 1, figsize=(8.0, 2.4 * len(models)), sharex=True, squeeze=False,
                             layout="constrained")  # fmt: skip
    for ax, (name, pred) in zip(axes[:, 0], models.items(), strict=True):
        pred = np.asarray(pred, np.float64)
        if pred.shape != obs.shape:
            raise ValueError(f"models[{name!r}]: expected shape {obs.shape}, found {pred.shape}")
        if w is not None:
            r = np.where(w > 0, (obs - pred) * np.sqrt(np.where(w > 0, w, 0.0)), np.nan)
        elif relative:
            r = (pred - obs) / obs
        else:
            r = obs - pred
        finite = np.isfinite(r)
        lo, hi = np.nanpercentile(r, [0.5, 99.5]) if ylim is None else ylim
        if not hi > lo:  # every residual the same: a window around it
            pad = 0.05 * max(abs(float(lo)), 1e-6)
            lo, hi = lo - pad, hi + pad
        ax.hist2d(np.broadcast_to(wave, r.shape)[finite], r[finite], bins=(min(400, wave.size), 60),
                  range=((wave.min(), wave.max()), (lo, hi)), cmap="Greys", cmin=1)  # fmt: skip
        mean, absmean = np.nanmean(r, axis=0), np.nanmean(np.abs(r), axis=0)
        ax.plot(*broken_line(wave, mean, gaps), color="C3", lw=0.8, label="mean")
        ax.plot(*broken_line(wave, absmean, gaps), color="C1", lw=0.8, label="mean |residual|")
        p16, p84 = np.nanpercentile(r, [16, 84])
        ax.set_title(f"{name}: bias {np.nanmean(r):.3g}, scatter {(p84 - p16) / 2:.3g}", fontsize=9)
        ax.set_ylabel("residual / sigma" if w is not None else ("relative residual" if relative else "residual"))
        ax.set_ylim(lo, hi)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("wavelength [A]")
    return fig


def missing_lines(wavelength, synthetic, transferred, jacobians, found=(), *, truth=None, labels=None):
    """The paper's Fig. 12: what the observed domain taught the networks about one star.

    Parameters
    ----------
    wavelength : array ``(L,)``
    synthetic : array ``(L,)``
        The emulator's spectrum of the star (on the networks' pixels).
    transferred : array ``(L,)``
        Its transfer to the observed domain.
    jacobians : LineJacobians
        From :func:`jaxspec.models.cycle_starnet.line_jacobians` at the same labels.
    found : sequence of Feature
        From :func:`jaxspec.models.cycle_starnet.features`: shaded in their label's colour.
    truth : array ``(L,)``, optional
        The true observed-domain spectrum (a mock's), drawn with the transfer.
    labels : sequence of str, optional
        The labels whose Jacobian differences to draw (default every label with a feature, else all).

    Returns
    -------
    matplotlib.figure.Figure with four ``Axes`` (synthetic; transferred and truth; their difference;
    the Jacobian differences, one line per drawn label).
    """
    plt = require_matplotlib()
    wave = np.asarray(wavelength, np.float64)
    syn, sent = np.asarray(synthetic, np.float64), np.asarray(transferred, np.float64)
    diff = np.asarray(jacobians.difference, np.float64)
    if syn.shape != wave.shape or sent.shape != wave.shape or diff.shape[0] != wave.size:
        raise ValueError(
            f"synthetic, transferred, jacobians: expected {wave.size} pixels each, found {syn.shape}, "
            f"{sent.shape}, {diff.shape}"
        )
    names = tuple(jacobians.label_names)
    if labels is None:
        labels = tuple(dict.fromkeys(f.name for f in found)) or names
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    gaps = gap_positions(wave)
    fig, axes = plt.subplots(4, 1, figsize=(8.0, 8.0), sharex=True, layout="constrained")
    axes[0].plot(*broken_line(wave, syn, gaps), "k", lw=0.7)
    axes[0].set_ylabel("synthetic")
    axes[1].plot(*broken_line(wave, sent, gaps), "C0", lw=0.7, label="transferred")
    if truth is not None:
        axes[1].plot(*broken_line(wave, np.asarray(truth, np.float64), gaps), "k", lw=0.5, alpha=0.6,
                     label="truth")  # fmt: skip
    axes[1].set_ylabel("observed domain")
    axes[1].legend(fontsize=7)
    axes[2].plot(*broken_line(wave, sent - syn, gaps), "k", lw=0.7)
    axes[2].set_ylabel("transferred - synthetic")
    for f in found:
        a, b = wave[f.start], wave[max(f.stop - 1, f.start)]
        axes[2].axvspan(a, b, color=colours.get(f.name, "0.5"), alpha=0.35, lw=0)
    for name in labels:
        j = names.index(name)
        axes[3].plot(*broken_line(wave, diff[:, j], gaps), lw=0.8, color=colours[name], label=name)
    axes[3].set_ylabel("d flux / d label:\ntransferred - emulator")
    axes[3].set_xlabel("wavelength [A]")
    axes[3].legend(fontsize=7, ncol=4)
    return fig
