r"""``jaxspec demo flows``: a Mendis flow on mock spectra; likelihood, outlier scores, correlation graph.

Reduced sizes so that it runs in under two minutes on two CPU cores: one
window of the Mendis grid (the first 400 binned pixels of the green chip,
and the three labels), a few thousand training stars, and a
*structured* flow (beyond the paper: :math:`p(y)\,p(S \mid y)`, so the
conditional draws behind the correlation graph are exact and need no MCMC).
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from jaxspec.cli.demos._report import save_figure, write_report

#: The binned pixels of the demo: the first 400 of the green chip.
WINDOW = slice(973, 1373)
CLASSES = ("cemp", "fast_rotator", "stripped", "cemp_mild", "fast_rotator_mild", "stripped_mild")
SCORE_NAMES = ("nll", "typicality", "likelihood_ratio", "background_nll")


def _window(data):
    """``data`` (a ``mock.MockMendis``) restricted to :data:`WINDOW`: spectra and labels."""
    from jaxspec.data.containers import Spectra

    s = data.spectra
    return Spectra(s.flux[:, WINDOW], s.ivar[:, WINDOW], s.wavelength[WINDOW]), data.labels


def demo_flows(*, out: Path, seed: int = 0, progress: bool = True, quick: bool = False) -> dict:
    """Train a structured Mendis flow on mock stars; held-out likelihood, ROC AUCs against PPCA, graph purity."""
    from jaxspec import metrics
    from jaxspec.data import mock
    from jaxspec.models import flows

    n_train, n_ref, n_test, n_out, epochs = (800, 200, 200, 100, 2) if quick else (4000, 600, 600, 300, 4)
    n_draws = 600 if quick else 3000
    key = jax.random.key(seed)
    k_train, k_test, k_out, k_fit, k_ref, k_draw = jax.random.split(key, 6)

    t0 = time.perf_counter()
    train = _window(mock.mendis(k_train, n_train, progress=False))
    held = mock.mendis(k_test, n_ref + n_test, progress=False)
    spectra, labels = _window(held)
    ref_set = (spectra[:n_ref], labels[:n_ref])
    test_set = (spectra[n_ref:], labels[n_ref:])
    outliers = {c: _window(mock.mendis(jax.random.fold_in(k_out, i), n_out, kind=c, progress=False))
                for i, c in enumerate(CLASSES)}  # fmt: skip
    mock_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    config = flows.Config(kind="structured", epochs=epochs, learning_rate=1e-4)
    fit = flows.fit(*train, key=k_fit, config=config, progress=progress)
    model = fit.model
    fit_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = flows.reference(model, *ref_set, key=k_ref, progress=False)
    ordinary = flows.outlier_scores(model, *test_set, ref, progress=False)
    held_lp, ppca_lp = -ordinary.nll, -ordinary.background_nll  # nats per star, data units
    scored = {c: flows.outlier_scores(model, *o, ref, progress=False) for c, o in outliers.items()}
    auc = {}
    for c, s in scored.items():
        positive = np.r_[np.zeros(n_test, bool), np.ones(n_out, bool)]
        auc[c] = {n: metrics.roc_auc(np.r_[getattr(ordinary, n), getattr(s, n)], positive) for n in SCORE_NAMES}
    score_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    y0 = np.array([4400.0, 2.05, -0.025])  # the training box's centre
    corr = flows.conditional_correlation(model, y0, n_draws, k_draw, progress=False)
    graph = flows.correlation_graph(corr)
    species = mock.mendis_species()
    purity = flows.component_purity(graph, species.species[WINDOW])
    by_element = flows.component_purity(graph, species.element[WINDOW])
    corr_s = time.perf_counter() - t0

    report = {
        "n_train": n_train,
        "n_pix": train[0].n_pix,
        "window": [WINDOW.start, WINDOW.stop],
        "kind": config.kind,
        "epochs": epochs,
        "best_epoch": fit.aux["best_epoch"],
        "history_nll_std": [float(v) for v in fit.history["nll_std"]],
        "held_out_log_prob": float(np.mean(held_lp)),
        "held_out_log_prob_ppca": float(np.mean(ppca_lp)),
        "auc": auc,
        "graph": {
            "components": len(graph.components),
            "sizes": purity.size.tolist(),
            "species": purity.majority,
            "purity": purity.purity.tolist(),
            "element_purity": by_element.purity.tolist(),
            "pure_fraction": float(np.mean(purity.purity >= 0.9)) if purity.size.size else float("nan"),
            "draws": n_draws,
            "labels": y0.tolist(),
        },
        "mock_s": mock_s,
        "fit_s": fit_s,
        "score_s": score_s,
        "corr_s": corr_s,
    }
    header = "  ".join(f"{n:>16s}" for n in SCORE_NAMES)
    lines = [
        f"Mendis flow ({config.kind}, {config.blocks} blocks x {config.hidden[0]}) on mock.mendis: {n_train} "
        f"training stars x {report['n_pix']} px (binned pixels {WINDOW.start}-{WINDOW.stop - 1}) + 3 labels",
        f"mock {mock_s:.1f} s; fit {fit_s:.1f} s ({epochs} epochs, kept epoch {fit.aux['best_epoch']}); "
        f"scores {score_s:.1f} s; correlation {corr_s:.1f} s  [wall, incl. compile]",
        f"held-out mean log-likelihood per star: flow {report['held_out_log_prob']:.1f} nats, "
        f"PPCA ({ref.background.n_components} components) {report['held_out_log_prob_ppca']:.1f} nats",
        f"ROC AUC, {n_test} held-out ordinary stars against {n_out} of each class:",
        f"  {'class':<18s}{header}",
        *(f"  {c:<18s}" + "  ".join(f"{auc[c][n]:>16.4f}" for n in SCORE_NAMES) for c in CLASSES),
        f"correlation graph of p(S | y) at y = {y0.tolist()} ({n_draws} exact draws, |corr| > 0.8, >= 3 px): "
        f"{len(graph.components)} components",
        *(
            f"  {size:>4d} px  {name or '(no line)':<6s} purity {p:.2f} (element {pe:.2f})"
            for size, name, p, pe in zip(purity.size, purity.majority, purity.purity, by_element.purity, strict=True)
        ),
    ]
    try:
        from jaxspec.plots import require_matplotlib

        require_matplotlib()
    except ImportError as exc:
        lines.append(f"figures skipped: {exc}")
    else:
        from jaxspec.plots import flows as fplots

        report["figures"] = [
            save_figure(fplots.training_history(fit), out / "flows_history.png"),
            save_figure(fplots.correlation_matrices(corr, graph), out / "flows_correlation.png"),
            save_figure(fplots.roc_curves(ordinary, scored), out / "flows_roc.png"),
            save_figure(fplots.score_histograms(ordinary, scored), out / "flows_nll.png"),
        ]
        lines.append(f"figures: {', '.join(report['figures'])}")
    print("\n".join(lines))
    write_report(out, "flows", report)
    return report
