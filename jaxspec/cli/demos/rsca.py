"""``jaxspec demo rsca``: RSCA on mock open clusters, doppelganger rates from spectra and from labels."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from jaxspec.cli.demos._report import save_figure, write_report


def demo_rsca(*, out: Path, seed: int = 0, progress: bool = True, quick: bool = False) -> dict:
    """RSCA on mock open clusters: doppelganger rates from spectra and from noisy abundance labels."""
    from jaxspec.data import mock
    from jaxspec.models import rsca

    n_clusters, n_members, n_field = (6, 8, 300) if quick else (12, 12, 1500)
    n_ppca, ks = (10, [2, 5, 10]) if quick else (40, [5, 10, 15, 20, 30])
    k = ks[-1]  # headline K (the paper's 30 of 60 PPCA components in the full demo)
    tol = [5.0, 0.05]  # |dRV| < 5 km/s, |dA_K| < 0.05 mag (the paper's nuisance matching)
    k_data, k_fit = jax.random.split(jax.random.key(seed))
    t0 = time.perf_counter()
    # ASPCAP fails on ~5% of the paper's stars for one of its abundances; those stars are dropped (sec. 2)
    noise = mock.Noise(missing_label_frac=0.005)  # 10 abundances: ~5% of stars miss one
    mc = mock.open_clusters(k_data, n_clusters, n_members, n_field, noise=noise, progress=progress)
    mock_s = time.perf_counter() - t0
    member = mc.cluster_id >= 0
    ids = mc.cluster_id[member]
    nuis = np.stack([mc.rv, mc.a_k], axis=1)
    nf, nc = nuis[~member], nuis[member]

    # Step 1 once, with the most components; every K of the sweep keeps the first K latents.
    t0 = time.perf_counter()
    config = rsca.Config(n_components=k, ppca_components=n_ppca)
    fit = rsca.fit(mc.spectra, mc.cluster_id, key=k_fit, config=config, progress=progress)  # -1 = field star
    field_feats, cluster_feats = fit.aux["field_feats"], fit.aux["cluster_feats"]  # rows in the order of mc
    fit_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    match = {"nuisance_field": nf, "nuisance_clusters": nc, "tolerances": tol}
    loo, raw = [], []
    for kk in ks:
        zp, zc = field_feats[:, :kk], cluster_feats[:, :kk]
        loo.append(rsca.leave_one_cluster_out_rate(zp, zc, ids, **match).rate)
        raw.append(rsca.doppelganger_rate(zp, zc, ids, **match).rate)
    top_dims = [n for n in (1, 2, 3, 5, 10, 20, 30) if n <= k]
    top = rsca.top_n_table(field_feats, cluster_feats, ids, n_dims=top_dims, **match)

    # Abundance baseline: steps 2-4 on [Fe/H] and the nine [X/Fe]; as in the paper, only stars with all of
    # them measured (the spectra rate on the same stars is reported too)
    lab = mc.labels.as_nan()
    abund = lab[:, mc.labels.index("FE_H") :]
    full = np.all(np.isfinite(abund), axis=1)
    fm, cm = full[~member], full[member]
    ab_match = {"nuisance_field": nf[fm], "nuisance_clusters": nc[cm], "tolerances": tol}
    ab = rsca.leave_one_cluster_out_rate(abund[~member & full], abund[member & full], ids[cm], **ab_match)
    ab_spectra = rsca.leave_one_cluster_out_rate(
        field_feats[fm], cluster_feats[cm], ids[cm], **ab_match
    )  # spectra on the same stars
    eval_s = time.perf_counter() - t0

    head = ks.index(k)
    report = {
        "n_clusters": n_clusters,
        "n_members": int(member.sum()),
        "n_field": int((~member).sum()),
        "n_pix": mc.spectra.n_pix,
        "ppca_components": n_ppca,
        "n_components": k,
        "ppca_converged": fit.converged,
        "ppca_iterations": len(fit.history["log_likelihood"]),
        "tolerances": {"rv_km_s": tol[0], "a_k_mag": tol[1]},
        "matched_pairs": int(sum(rsca.doppelganger_rate(field_feats, cluster_feats, ids, **match).n_pairs)),
        "rate_spectra": loo[head],
        "rate_raw_latents": raw[head],
        "rate_labels": ab.rate,
        "rate_spectra_same_stars": ab_spectra.rate,
        "labels_n_field": int(fm.sum()),
        "labels_n_members": int(cm.sum()),
        "per_cluster_spectra": [None if not np.isfinite(v) else float(v) for v in top.per_cluster[-1]],
        "k_sweep": {"n_components": ks, "rate_spectra": loo, "rate_raw_latents": raw},
        "top_n": {"n_dims": top_dims, "rate": [float(v) for v in top.rates]},
        "mock_s": mock_s,
        "fit_s": fit_s,
        "eval_s": eval_s,
    }
    lines = [
        f"RSCA on mock open clusters: {n_clusters} clusters x {n_members} members + {report['n_field']} field "
        f"giants x {mc.spectra.n_pix} px; PPCA {n_ppca} components, K = {k}",
        f"mock {mock_s:.1f} s; RSCA fit {fit_s:.1f} s ({report['ppca_iterations']} EM iterations, "
        f"converged {fit.converged}); rates {eval_s:.1f} s  [wall, incl. compile]",
        f"doppelganger rate (leave-one-cluster-out, |dRV| < {tol[0]:g} km/s, |dA_K| < {tol[1]:g}; "
        f"{report['matched_pairs']} matched member-field pairs):",
        f"  RSCA on spectra           {loo[head]:.4f}",
        f"  raw PPCA latents          {raw[head]:.4f}  (no metric learning)",
        f"  RSCA on abundance labels  {ab.rate:.4f}  ([Fe/H] + 9 [X/Fe]; {report['labels_n_members']} members, "
        f"{report['labels_n_field']} field with all measured; spectra on those stars: {ab_spectra.rate:.4f})",
        "rate against K (first K PPCA components):  "
        + ", ".join(f"K={a}: {b:.4f}" for a, b in zip(ks, loo, strict=True)),
        f"top-N table (N most discriminating RSCA dimensions at K = {k}):",
        "  " + "  ".join(f"{n:>6d}" for n in top_dims),
        "  " + "  ".join(f"{v:>6.4f}" for v in top.rates),
    ]
    try:
        from jaxspec.plots import require_matplotlib

        require_matplotlib()
    except ImportError as exc:
        lines.append(f"figures skipped: {exc}")
    else:
        from jaxspec.plots.rsca import plot_rate_vs_components, plot_rsca_dimensions

        feats = np.concatenate([cluster_feats, field_feats])
        emb = rsca.embed(fit.model.metric, feats, n_dims=min(4, k))
        fe_h = np.concatenate([lab[member, mc.labels.index("FE_H")], lab[~member, mc.labels.index("FE_H")]])
        all_ids = np.concatenate([ids, np.full(int((~member).sum()), -1)])
        report["figures"] = [
            save_figure(
                plot_rsca_dimensions(emb, fe_h, cluster_ids=all_ids, n_dims=min(4, k)), out / "rsca_dimensions.png"
            ),
            save_figure(
                plot_rate_vs_components(ks, loo, rate_labels=ab.rate, rates_raw=raw), out / "rsca_rate_vs_k.png"
            ),
        ]
        lines.append(f"figures: {', '.join(report['figures'])}")
    print("\n".join(lines))
    write_report(out, "rsca", report)
    return report
