"""Writes the saved-model reference files of jaxspec 0.2.0.dev0 (format 2: stable class names, the family contract).

Run once, from the repository root, at the commit that added it:
``python -m tests.data.make_references_v0_2``.  Kept in git history only (later
APIs may differ); ``tests/data/README.md`` names the commit.  The same data and
seeds as the 0.1.0 files, plus the PPCA, which 0.1.0 could not save.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
V = "0.2.0.dev0"


def _small_spectra(spectra, n_pix):
    from jaxspec import Spectra

    return Spectra(
        np.asarray(spectra.flux)[:, :n_pix], np.asarray(spectra.ivar)[:, :n_pix], np.asarray(spectra.wavelength)[:n_pix]
    )


def main():
    from jaxspec import io
    from jaxspec.data import mask_bad_pixels, mock
    from jaxspec.models import cannon, lux, ppca, rsca
    from jaxspec.models import scatter_vae as sv
    from jaxspec.models.lux import mlp

    jax.config.update("jax_enable_x64", False)
    survey = mock.survey(jax.random.key(0), 160, noise=mock.Noise(snr=(100, 300)), progress=False)
    spectra = _small_spectra(mask_bad_pixels(survey.spectra), 150)
    labels = survey.labels.select(["TEFF", "LOGG", "FE_H"])
    test_s, test_l = spectra[120:], labels[120:]
    common = {
        "flux": np.asarray(test_s.flux), "ivar": np.asarray(test_s.ivar), "wavelength": np.asarray(test_s.wavelength),
        "label_values": np.asarray(test_l.values), "label_ivar": np.asarray(test_l.ivar),
        "label_names": np.array(test_l.names),
    }  # fmt: skip

    fit = lux.fit(spectra[:120], labels[:120], key=jax.random.key(1), config=lux.Config(n_latents=6, omega=1.0),
                  progress=False)  # fmt: skip
    model = io.load(io.save(HERE / f"lux-v{V}.npz", fit.model))
    pl = lux.predict_labels(model, test_s, progress=False)
    ps = lux.predict_spectra(model, test_l, progress=False)
    np.savez(
        HERE / f"lux-v{V}-expected.npz", **common,
        pred_labels=np.asarray(pl.labels.values), pred_label_ivar=np.asarray(pl.labels.ivar),
        pred_covariance=np.asarray(pl.covariance), pred_flagged=np.asarray(pl.flagged),
        pred_flux=np.asarray(ps.spectra.flux), pred_flux_ivar=np.asarray(ps.spectra.ivar),
    )  # fmt: skip

    mfit = mlp.fit(spectra[:120], labels[:120], key=jax.random.key(2), base=fit,
                   config=mlp.Config(hidden=(8,), epochs=3), progress=False)  # fmt: skip
    mmodel = io.load(io.save(HERE / f"lux_mlp-v{V}.npz", mfit.model))
    pm = mlp.predict_labels(mmodel, test_s, progress=False)
    np.savez(
        HERE / f"lux_mlp-v{V}-expected.npz", **common,
        pred_labels=np.asarray(pm.labels.values), pred_covariance=np.asarray(pm.covariance),
    )  # fmt: skip

    cfit = cannon.fit(spectra[:120], labels[:120], progress=False)
    cmodel = io.load(io.save(HERE / f"cannon-v{V}.npz", cfit.model))
    cs = cannon.predict_spectra(cmodel, test_l)
    ci = cannon.predict_labels(cmodel, test_s, progress=False)
    np.savez(
        HERE / f"cannon-v{V}-expected.npz", **common,
        pred_flux=np.asarray(cs.spectra.flux), pred_flagged_spectra=np.asarray(cs.flagged),
        pred_labels=np.asarray(ci.labels.values), pred_covariance=np.asarray(ci.covariance),
    )  # fmt: skip

    mc = mock.open_clusters(jax.random.key(3), n_clusters=5, n_members=6, n_field=150, progress=False)
    cl = _small_spectra(mc.spectra, 200)
    rfit = rsca.fit(cl, mc.cluster_id, key=jax.random.key(4), config=rsca.Config(n_components=4, ppca_components=6),
                    progress=False)  # fmt: skip
    rmodel = io.load(io.save(HERE / f"rsca-v{V}.npz", rfit.model))
    probe = cl[:40]
    cl_common = {
        "flux": np.asarray(probe.flux),
        "ivar": np.asarray(probe.ivar),
        "wavelength": np.asarray(probe.wavelength),
    }
    np.savez(HERE / f"rsca-v{V}-expected.npz", **cl_common, transformed=rsca.transform(rmodel, probe, progress=False))

    pfit = ppca.fit(cl, key=jax.random.key(5), config=ppca.Config(n_components=5), progress=False)
    pmodel = io.load(io.save(HERE / f"ppca-v{V}.npz", pfit.model))
    z = ppca.encode(pmodel, probe, progress=False)
    np.savez(HERE / f"ppca-v{V}-expected.npz", **cl_common, latents=z, decoded=np.asarray(ppca.decode(pmodel, z)))

    xp = mock.gaia_xp(jax.random.key(5), 300)
    config = sv.Config(hidden=(16, 8), latent_dim=3, batch_size=64, epochs=2)
    sfit = sv.fit(xp, key=jax.random.key(6), config=config, progress=False)
    smodel = io.load(io.save(HERE / f"svae-v{V}.npz", sfit.model))
    coef, err, g = xp.coefficients[:30], xp.errors[:30], xp.phot_g_mean_flux[:30]
    mu, logvar = sv.encode(smodel, (coef, err), g, progress=False)
    zz = np.asarray(jax.random.normal(jax.random.key(7), (30, 3)), np.float32)
    x_hat, s = (np.asarray(a) for a in sv.decode(smodel, zz))
    score = sv.anomaly_score(smodel, (coef, err), g, progress=False)
    np.savez(
        HERE / f"svae-v{V}-expected.npz",
        coefficients=coef, errors=err, g_flux=g, z=zz, mu=mu, logvar=logvar,
        x_hat=x_hat, scatter=s, anomaly_score=score,
    )  # fmt: skip
    for p in sorted(HERE.glob(f"*-v{V}*.npz")):
        print(f"{p.name}: {p.stat().st_size / 1024:.1f} kB")


if __name__ == "__main__":
    main()
