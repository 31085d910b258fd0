"""Writes the saved-model reference files of jaxspec 0.1.0 (the code before the family-contract move).

Run once, from the repository root, at the commit that added it:
``python -m tests.data.make_references_v0_1``.  It is kept in git history only
(the API it calls has since changed); ``tests/data/README.md`` names the commit.
Each family gets ``<family>-v0.1.0.npz`` (written by ``jaxspec.io.save``) and
``<family>-v0.1.0-expected.npz`` (plain arrays: the inputs and the predictions
this code made from the loaded file).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent


def _small_spectra(spectra, n_pix):
    from jaxspec import Spectra

    return Spectra(
        np.asarray(spectra.flux)[:, :n_pix], np.asarray(spectra.ivar)[:, :n_pix], np.asarray(spectra.wavelength)[:n_pix]
    )


def main():
    from jaxspec import Labels, io
    from jaxspec.data import mask_bad_pixels, mock
    from jaxspec.models import cannon, lux, lux_mlp, rsca
    from jaxspec.models import scatter_vae as sv

    jax.config.update("jax_enable_x64", False)
    # -- lux and lux_mlp: 120 stars, 3 labels, 150 pixels of the mock survey
    survey = mock.survey(jax.random.key(0), 160, noise=mock.Noise(snr=(100, 300)), progress=False)
    spectra = _small_spectra(mask_bad_pixels(survey.spectra), 150)
    labels = survey.labels.select(["TEFF", "LOGG", "FE_H"])
    fit = lux.fit(labels[:120], spectra[:120], key=jax.random.key(1), n_latents=6, omega=1.0, progress=False)
    path = io.save(HERE / "lux-v0.1.0.npz", fit.model)
    model = io.load(path)
    test_s, test_l = spectra[120:], labels[120:]
    pl = lux.predict_labels(model, test_s, progress=False)
    ps = lux.predict_spectra(model, test_l, progress=False)
    np.savez(
        HERE / "lux-v0.1.0-expected.npz",
        flux=np.asarray(test_s.flux), ivar=np.asarray(test_s.ivar), wavelength=np.asarray(test_s.wavelength),
        label_values=np.asarray(test_l.values), label_ivar=np.asarray(test_l.ivar),
        label_names=np.array(test_l.names),
        pred_labels=np.asarray(pl.labels.values), pred_label_ivar=np.asarray(pl.labels.ivar),
        pred_covariance=np.asarray(pl.covariance), pred_flagged=np.asarray(pl.flagged),
        pred_flux=np.asarray(ps.spectra.flux), pred_flux_ivar=np.asarray(ps.spectra.ivar),
    )  # fmt: skip

    mfit = lux_mlp.fit_mlp_output(
        fit, labels[:120], spectra[:120], key=jax.random.key(2), hidden=(8,), epochs=3, progress=False
    )
    path = io.save(HERE / "lux_mlp-v0.1.0.npz", mfit.model)
    mmodel = io.load(path)
    pm = lux_mlp.predict_labels_mlp(mmodel, test_s, progress=False)
    np.savez(
        HERE / "lux_mlp-v0.1.0-expected.npz",
        flux=np.asarray(test_s.flux), ivar=np.asarray(test_s.ivar), wavelength=np.asarray(test_s.wavelength),
        pred_labels=np.asarray(pm.labels.values), pred_covariance=np.asarray(pm.covariance),
    )  # fmt: skip

    # -- cannon: on the same stars
    cfit = cannon.fit(spectra[:120], labels[:120])
    path = io.save(HERE / "cannon-v0.1.0.npz", cfit.model)
    cmodel = io.load(path)
    cs = cannon.predict_spectra(cmodel, test_l)
    ci = cannon.infer_labels(cmodel, test_s)
    np.savez(
        HERE / "cannon-v0.1.0-expected.npz",
        flux=np.asarray(test_s.flux), ivar=np.asarray(test_s.ivar), wavelength=np.asarray(test_s.wavelength),
        label_values=np.asarray(test_l.values), label_ivar=np.asarray(test_l.ivar),
        label_names=np.array(test_l.names),
        pred_flux=np.asarray(cs), pred_labels=np.asarray(ci.labels.values), pred_covariance=np.asarray(ci.covariance),
    )  # fmt: skip

    # -- rsca: mock clusters, 200 pixels
    mc = mock.open_clusters(jax.random.key(3), n_clusters=5, n_members=6, n_field=150, progress=False)
    cl = _small_spectra(mc.spectra, 200)
    member = mc.cluster_id >= 0
    rfit = rsca.fit(
        cl[~member], cl[member], mc.cluster_id[member], n_components=4, key=jax.random.key(4),
        ppca_components=6, ppca_kwargs={"progress": False},
    )  # fmt: skip
    path = io.save(HERE / "rsca-v0.1.0.npz", rfit.model)
    rmodel = io.load(path)
    probe = cl[:40]
    np.savez(
        HERE / "rsca-v0.1.0-expected.npz",
        flux=np.asarray(probe.flux), ivar=np.asarray(probe.ivar), wavelength=np.asarray(probe.wavelength),
        transformed=rsca.transform(rmodel, probe),
    )  # fmt: skip

    # -- scatter VAE: 300 mock XP stars, a narrow network, 2 epochs
    xp = mock.gaia_xp(jax.random.key(5), 300)
    config = sv.SVAEConfig(hidden=(16, 8), latent_dim=3, batch_size=64, epochs=2)
    sfit = sv.fit(xp, key=jax.random.key(6), config=config, progress=False)
    path = io.save(HERE / "svae-v0.1.0.npz", sfit.model)
    smodel = io.load(path)
    coef, err, g = xp.coefficients[:30], xp.errors[:30], xp.phot_g_mean_flux[:30]
    mu, logvar = sv.encode(smodel, (coef, err), g, progress=False)
    z = np.asarray(jax.random.normal(jax.random.key(7), (30, 3)), np.float32)
    x_hat, s = sv.decode(smodel, z)
    score = sv.anomaly_score(smodel, (coef, err), g, progress=False)
    np.savez(
        HERE / "svae-v0.1.0-expected.npz",
        coefficients=coef, errors=err, g_flux=g, z=z,
        mu=mu, logvar=logvar, x_hat=x_hat, scatter=s, anomaly_score=score,
    )  # fmt: skip
    for p in sorted(HERE.glob("*-v0.1.0*.npz")):
        print(f"{p.name}: {p.stat().st_size / 1024:.1f} kB")
    del Labels


if __name__ == "__main__":
    main()
