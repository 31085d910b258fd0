"""Saved model files of earlier jaxspec versions keep loading and predicting the same (``tests/data``).

The files and the predictions beside them were written by the code of their
version (``tests/data/README.md``); they are never rewritten.  Predictions
are compared to float32 rounding (the references were made in float32; under
``JAX_ENABLE_X64=1`` the same model predicts in float64).  ``CHECKS`` is the
one place that knows how to predict with each family's files; the contract
test (``tests/test_contract.py``) runs it for every family too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxspec import Labels, Spectra, io

DATA = Path(__file__).resolve().parent / "data"
X64 = jax.config.jax_enable_x64


def versions(family: str) -> list[str]:
    """The versions with a reference file of ``family`` (``<family>-v<version>.npz``)."""
    return sorted(p.name[len(family) + 2 : -4] for p in DATA.glob(f"{family}-v*.npz") if "expected" not in p.name)


def _close(actual, desired, rtol=2e-6, atol=0.0, x64_rtol=2e-3, x64_atol=1e-5):
    """Equal to float32 rounding of the reference (looser under x64: a float64 fit of float32 data)."""
    if X64:
        rtol, atol = x64_rtol, max(atol, x64_atol)
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(desired, np.float64), rtol=rtol, atol=atol)


def _close_cov(actual, desired, atol=1e-4):
    """Covariances ``(n, M, M)`` compared in units of the reference's standard deviations (float32: ``atol``;
    Gauss-Newton covariances differ by 2.5e-5 between an AVX-512 and an AVX2 CPU)."""
    desired = np.asarray(desired, np.float64)
    sd = np.sqrt(np.diagonal(desired, axis1=1, axis2=2))
    norm = sd[:, :, None] * sd[:, None, :]
    _close(np.asarray(actual) / norm, desired / norm, rtol=0.0, atol=atol, x64_rtol=0.0, x64_atol=2e-2)


def _files(family, version):
    return DATA / f"{family}-v{version}.npz", np.load(DATA / f"{family}-v{version}-expected.npz")


def _spectra(d):
    return Spectra(d["flux"], ivar=d["ivar"], wavelength=d["wavelength"])


def _labels(d):
    return Labels(d["label_values"], ivar=d["label_ivar"], names=[str(n) for n in d["label_names"]])


def check_lux(version: str) -> None:
    from jaxspec.models import lux

    path, d = _files("lux", version)
    model = io.load(path, family="lux")
    pl = lux.predict_labels(model, _spectra(d), progress=False)
    _close(pl.labels.values, d["pred_labels"], rtol=5e-4)  # a Gauss-Newton fit: rounding differs by CPU (AVX2: 9e-5)
    _close(pl.labels.ivar, d["pred_label_ivar"], rtol=1e-4, x64_rtol=2e-2)
    _close_cov(pl.covariance, d["pred_covariance"])
    np.testing.assert_array_equal(pl.flagged, d["pred_flagged"])
    ps = lux.predict_spectra(model, _labels(d), progress=False)
    _close(ps.spectra.flux, d["pred_flux"], rtol=1e-4)  # latents by Gauss-Newton (AVX2: 3.3e-5)
    _close(ps.spectra.ivar, d["pred_flux_ivar"], rtol=1e-4, x64_rtol=2e-2)


def check_lux_mlp(version: str) -> None:
    from jaxspec.models.lux import mlp

    path, d = _files("lux_mlp", version)
    model = io.load(path, family="lux_mlp")
    pm = mlp.predict_labels(model, _spectra(d), progress=False)
    _close(pm.labels.values, d["pred_labels"], rtol=5e-4)  # as lux (AVX2: 1.2e-4)
    _close_cov(pm.covariance, d["pred_covariance"])


def check_cannon(version: str) -> None:
    from jaxspec.models import cannon

    path, d = _files("cannon", version)
    model = io.load(path, family="cannon")
    pred = cannon.predict_spectra(model, _labels(d))
    # 0.1.0 gave a NaN row for a star with a missing label; the contract flags it (flux 1, ivar 0)
    missing = np.isnan(d["pred_flux"]).all(axis=1) | d.get("pred_flagged_spectra", False)
    np.testing.assert_array_equal(pred.flagged, missing)
    _close(np.asarray(pred.spectra.flux)[~missing], d["pred_flux"][~missing], rtol=1e-5)
    inferred = cannon.predict_labels(model, _spectra(d), progress=False)
    # an iterative fit to a tolerance: under x64 it stops at another point, within a small part of the error bar
    sd = np.sqrt(np.diagonal(np.asarray(d["pred_covariance"], np.float64), axis1=1, axis2=2))
    # an iterative float32 fit stopped at its tolerance: 0.016 sd apart on an AVX2 CPU from the AVX-512 original
    _close(inferred.labels.values / sd, d["pred_labels"] / sd, rtol=1e-5, atol=0.05, x64_rtol=0.0, x64_atol=0.1)
    _close_cov(inferred.covariance, d["pred_covariance"], atol=2e-2)  # at the other stopping point (AVX2: 6e-3)


def check_ppca(version: str) -> None:
    from jaxspec.models import ppca

    path, d = _files("ppca", version)
    model = io.load(path, family="ppca")
    z = ppca.encode(model, _spectra(d), progress=False)
    _close(z, d["latents"], rtol=1e-5, atol=1e-5, x64_atol=1e-3)
    _close(ppca.decode(model, d["latents"]), d["decoded"], rtol=1e-6, atol=1e-6)


def check_rsca(version: str) -> None:
    from jaxspec.models import rsca

    path, d = _files("rsca", version)
    model = io.load(path, family="rsca")
    _close(rsca.transform(model, _spectra(d), progress=False), d["transformed"], rtol=1e-5, atol=1e-5, x64_atol=1e-3)


def check_svae(version: str) -> None:
    from jaxspec.models import scatter_vae as sv

    path, d = _files("svae", version)
    model = io.load(path, family="svae")
    data, g = (d["coefficients"], d["errors"]), d["g_flux"]
    mu, logvar = sv.encode(model, data, g, progress=False)
    _close(mu, d["mu"], rtol=1e-5, atol=1e-6)
    _close(logvar, d["logvar"], rtol=1e-5, atol=1e-6)
    x_hat, s = sv.decode(model, d["z"])
    _close(x_hat, d["x_hat"], rtol=1e-5, atol=1e-6)
    _close(s, d["scatter"], rtol=1e-5, atol=1e-6)
    _close(sv.anomaly_score(model, data, g, progress=False), d["anomaly_score"], rtol=1e-5, atol=1e-6)


def check_payne(version: str) -> None:
    from jaxspec.models import payne

    path, d = _files("payne", version)
    model = io.load(path, family="payne")
    assert model.file_format == "network" and model.label_names == tuple(str(n) for n in d["label_names"])
    np.testing.assert_array_equal(model.wavelength, d["wavelength"])
    pred = payne.predict_spectra(model, _labels(d), progress=False)
    # flagged: a missing label or one outside the training box (flux 1, ivar 0)
    np.testing.assert_array_equal(pred.flagged, d["pred_flagged"])
    _close(pred.spectra.flux, d["pred_flux"], rtol=1e-5, atol=1e-6)
    _close(payne.decode(model, d["probe_labels"]), d["decoded"], rtol=1e-5, atol=1e-6)


def check_flows(version: str) -> None:
    from jaxspec.models import flows

    path, d = _files("flows", version)
    model = io.load(path, family="flows")
    assert model.config.kind == ("structured" if version.endswith("-structured") else "joint")
    assert model.label_names == tuple(str(n) for n in d["label_names"])
    np.testing.assert_array_equal(model.wavelength, d["wavelength"])
    _close(flows.log_prob(model, _spectra(d), _labels(d), progress=False), d["log_prob"], rtol=1e-5, atol=1e-3)
    _close(flows.log_density(model, d["probe"]), d["log_density"], rtol=1e-5, atol=1e-3)
    draws = flows.sample(model, jax.random.key(9), 10, progress=False)
    _close(draws.spectra, d["sample_spectra"], rtol=1e-5, atol=1e-5)
    _close(draws.labels, d["sample_labels"], rtol=1e-5, atol=1e-5)


def check_cycle_starnet(version: str) -> None:
    from jaxspec.models import cycle_starnet as cs
    from jaxspec.models import payne

    path, d = _files("cycle_starnet", version)
    model = io.load(path, family="cycle_starnet")
    np.testing.assert_array_equal(model.wavelength, d["wavelength"])
    observed = _spectra(d)
    synthetic = Spectra(d["synth_flux"], ivar=d["synth_ivar"], wavelength=d["wavelength"])
    z = cs.encode(model, observed, progress=False)
    _close(z.z_sh, d["z_sh"], rtol=1e-5, atol=1e-5)
    _close(z.z_sp, d["z_sp"], rtol=1e-5, atol=1e-5)
    _close(cs.transfer(model, observed, "obs->synth", progress=False), d["obs_synth"], rtol=1e-5, atol=1e-6)
    synth_obs = cs.transfer(model, synthetic, "synth->obs", z_sp=d["z_sp"][:4], progress=False)
    _close(synth_obs, d["synth_obs"], rtol=1e-5, atol=1e-6)
    _close(cs.reconstruct(model, observed, progress=False), d["obs_obs"], rtol=1e-5, atol=1e-6)
    _close(cs.decode(model, d["z_sh"], d["z_sp"]), d["decoded"], rtol=1e-5, atol=1e-6)
    _close(payne.decode(model.emulator, np.array([[4500.0, 2.0, 0.0]], np.float32)), d["emulated"], rtol=1e-5)


CHECKS = {
    "lux": check_lux,
    "lux_mlp": check_lux_mlp,
    "cannon": check_cannon,
    "ppca": check_ppca,
    "rsca": check_rsca,
    "svae": check_svae,
    "payne": check_payne,
    "flows": check_flows,
    "cycle_starnet": check_cycle_starnet,
}
CASES = [(family, version) for family in CHECKS for version in versions(family)]


def test_every_family_has_reference_files():
    assert {f for f, _ in CASES} == set(CHECKS)
    assert {v for f, v in CASES if f != "ppca"} >= {"0.1.0"}  # 0.1.0 could not save a PPCA


@pytest.mark.parametrize(("family", "version"), CASES)
def test_loads_in_a_fresh_interpreter(family, version):
    """``jaxspec.io.load`` imports the family's module itself (nothing else imported first)."""
    path, _ = _files(family, version)
    code = (
        "import sys, jaxspec.io as io; m = io.load(sys.argv[1]); "
        "print(io.info(sys.argv[1])['family'], type(m).__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == family and out.stdout.split()[1].startswith("jaxspec.models.")
