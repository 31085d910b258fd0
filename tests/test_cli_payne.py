"""``jaxspec payne fit``: aspcapStar files fitted with the shipped emulator, one table row each; bad input."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from astropy.table import Table

from jaxspec import cli

N_STARS = 5
LABELS = ("TEFF", "LOGG", "FE_H", "ALPHA_FE", "VBROAD")


@pytest.fixture(scope="module")
def payne_files(shared_data, tmp_path_factory):
    """Five aspcapStar files (the 8575-pixel grid, gaps zero) of the shipped emulator's spectra at known
    labels and RVs with noise at SNR 100, and the planted truth."""
    from jaxspec.models import payne
    from tests.test_apogee import _on_chips, write_aspcapstar

    folder = tmp_path_factory.mktemp("payne_cli")
    emulator = shared_data / "payne" / "NN_normalized_spectra.npz"
    model = payne.load(emulator)
    rng = np.random.default_rng(5)
    lo, hi = np.asarray(model.x_min, np.float64), np.asarray(model.x_max, np.float64)
    truth = lo + (hi - lo) * rng.uniform(0.25, 0.75, (N_STARS, 5))
    rv = rng.uniform(-3.0, 3.0, N_STARS)
    err = 0.01
    flux = np.asarray(payne.observed_spectra(model, truth, rv), np.float64)
    flux = flux + rng.normal(0.0, err, (N_STARS, model.n_pix))
    files = []
    for i in range(N_STARS):
        path = folder / f"aspcapStar-r12-2M{i:08d}+{i:07d}.fits"
        files.append(str(write_aspcapstar(path, _on_chips(flux[i], 7214), _on_chips(np.full(7214, err), 7214))))
    return {"folder": folder, "model": str(emulator), "files": files, "labels": truth, "rv": rv}


def test_payne_fit_recovers_planted_labels_and_rvs(payne_files, capsys):
    out = payne_files["folder"] / "labels.fits"
    argv = ["payne", "fit", "--model", payne_files["model"], "--spectra", *payne_files["files"], "--out", str(out)]
    assert cli.main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"fitted {', '.join(LABELS)} and RV of {N_STARS} stars (0 flagged" in printed and str(out) in printed
    table = Table.read(out)
    assert list(table["ID"]) == [f"2M{i:08d}+{i:07d}" for i in range(N_STARS)]
    assert list(table["FILE"]) == payne_files["files"]
    expected = ["ID", "FILE", *[c for n in LABELS for c in (n, f"{n}_ERR")], "RV", "RV_ERR", "CHI2", "REDUCED_CHI2"]
    assert table.colnames == [*expected, "CONVERGED", "ON_BOUND", "FLAGGED"]
    assert np.all(table["CONVERGED"]) and not np.any(table["FLAGGED"]) and not np.any(table["ON_BOUND"])
    for j, name in enumerate(LABELS):
        assert np.all(table[f"{name}_ERR"] > 0), name
        pull = (table[name] - payne_files["labels"][:, j]) / table[f"{name}_ERR"]
        assert np.all(np.abs(pull) < 4.0), (name, pull)
    rv_pull = (table["RV"] - payne_files["rv"]) / table["RV_ERR"]
    assert np.all(np.abs(rv_pull) < 4.0) and np.all(table["RV_ERR"] < 0.5), rv_pull
    # every pixel of the chips measured: chi2 / (7214 pixels - 5 labels - RV)
    np.testing.assert_allclose(table["REDUCED_CHI2"], table["CHI2"] / (7214 - 6), rtol=1e-5)
    assert np.all(np.abs(table["REDUCED_CHI2"] - 1.0) < 0.1)
    assert not list(out.parent.glob(".labels.fits.*"))  # the temporary file was renamed


def test_payne_fit_reads_a_jaxspec_model_a_mask_and_file_lists(payne_files, shared_data, tmp_path, capsys):
    from jaxspec import io
    from jaxspec.models import payne

    saved = io.save(tmp_path / "emulator.npz", payne.load(payne_files["model"]))
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(payne_files["files"]) + "\n")
    mask = shared_data / "payne" / "apogee_mask.npz"
    out = tmp_path / "labels.ecsv"
    argv = ["payne", "fit", "--model", str(saved), "--spectra", f"@{listing}", "--out", str(out)]
    argv += ["--mask", str(mask), "--n-starts", "2", "--chunk-size", "4", "--no-progress"]
    assert cli.main(argv) == 0
    table = Table.read(out)
    n_good = 7214 - int(np.sum(np.load(mask)["apogee_mask"]))
    np.testing.assert_allclose(table["REDUCED_CHI2"], table["CHI2"] / (n_good - 6), rtol=1e-5)
    for j, name in enumerate(LABELS):
        assert np.all(np.abs(table[name] - payne_files["labels"][:, j]) < 4.0 * table[f"{name}_ERR"]), name

    out = tmp_path / "rest.csv"
    argv = ["payne", "fit", "--model", str(saved), "--spectra", *payne_files["files"][:2], "--out", str(out)]
    assert cli.main([*argv, "--no-rv", "--no-progress"]) == 0
    assert "fitted TEFF, LOGG, FE_H, ALPHA_FE, VBROAD of 2 stars" in capsys.readouterr().out
    table = Table.read(out)
    assert np.all(table["RV"] == 0.0) and np.all(table["RV_ERR"] == 0.0) and len(table) == 2


def _tiny_payne_file(path: Path, n_pix: int) -> str:
    """A Payne single-network file of 2 labels and ``n_pix`` pixels."""
    from jaxspec.models import payne

    layers = (payne.Layer(jnp.ones((3, 2)), jnp.zeros(3)), payne.Layer(jnp.ones((n_pix, 3)), jnp.zeros(n_pix)))
    model = payne.Model(layers, jnp.zeros(2), jnp.ones(2), ("A", "B"))
    return str(payne.save_payne_format(model, path))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bad_suffix", "--out: expected a .fits, .csv or .ecsv file name, found 'labels.txt'"),
        ("missing_model", "--model: no such file"),
        ("fits_model", "--model: "),
        ("not_apogee", "--model: "),
        ("missing_spectrum", "--spectra: no such file"),
        ("wrong_grid", "--spectra: "),
        ("mask_shape", "--mask: "),
        ("mask_not_npz", "--mask: "),
        ("mask_two_arrays", "--mask: "),
        ("no_folder", "--out: folder"),
    ],
)
def test_payne_fit_bad_input_is_exit_2_with_a_message(payne_files, tmp_path, capsys, case, message):
    from tests.test_apogee import write_aspcapstar

    model, files, out, extra = payne_files["model"], payne_files["files"][:2], tmp_path / "labels.csv", []
    if case == "bad_suffix":
        out = tmp_path / "labels.txt"
    elif case == "missing_model":
        model = str(tmp_path / "none.npz")
    elif case == "fits_model":
        model = files[0]
    elif case == "not_apogee":
        model = _tiny_payne_file(tmp_path / "tiny.npz", 30)
        message = "emulates 30 pixels, not an APOGEE grid (7514 or 7214)"
    elif case == "missing_spectrum":
        files = [*files, str(tmp_path / "aspcapStar-r12-nope.fits")]
    elif case == "wrong_grid":  # a file trimmed to 7214 pixels cannot give the 7514 grid
        model = _tiny_payne_file(tmp_path / "apogee7514.npz", 7514)
        files = [str(write_aspcapstar(tmp_path / "aspcapStar-r12-2M1.fits", np.ones(7214), np.full(7214, 0.01)))]
        message = "lacks pixels of the requested n_pix=7514 grid"
    elif case == "mask_shape":
        np.savez(tmp_path / "mask.npz", apogee_mask=np.zeros(100, bool))
        extra = ["--mask", str(tmp_path / "mask.npz")]
        message = "expected a boolean array of 7214 pixels"
    elif case == "mask_not_npz":
        extra = ["--mask", files[0]]
        message = "not a readable .npz file (a FITS file)"
    elif case == "mask_two_arrays":
        np.savez(tmp_path / "mask.npz", a=np.zeros(7214, bool), b=np.zeros(7214, bool))
        extra = ["--mask", str(tmp_path / "mask.npz")]
        message = "expected one array or an 'apogee_mask' entry, found ['a', 'b']"
    elif case == "no_folder":
        out = tmp_path / "nowhere" / "labels.csv"
    argv = ["payne", "fit", "--model", model, "--spectra", *files, "--out", str(out), *extra, "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxspec payne fit: error:") and message in err, err
    assert err.count("\n") == 1 and "allow_pickle" not in err, err
    assert not out.exists()


@pytest.mark.parametrize(("option", "value"), [("--n-starts", "0"), ("--chunk-size", "1.5")])
def test_payne_fit_bad_integers_are_usage_errors(payne_files, tmp_path, capsys, option, value):
    argv = ["payne", "fit", "--model", payne_files["model"], "--spectra", payne_files["files"][0]]
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--out", str(tmp_path / "x.csv"), option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{option}: expected an integer >= 1, found {value}" in err, err


def test_help_lists_payne(capsys):
    with pytest.raises(SystemExit):
        cli.main(["payne", "fit", "--help"])
    out = capsys.readouterr().out
    for option in ("--model", "--spectra", "--out", "--mask", "--no-rv", "--n-starts", "--chunk-size"):
        assert option in out


def test_payne_fit_reads_a_real_apogee_spectrum(shared_data, tmp_path, capsys):
    """The real combined APOGEE spectrum in ../shared (The Payne's, 7214 px) as an aspcapStar file."""
    from tests.test_apogee import write_aspcapstar

    real = np.load(shared_data / "payne" / "spectrum_ap_id_2M13012770+5754582_.npz")
    path = write_aspcapstar(tmp_path / "aspcapStar-r12-2M13012770+5754582.fits", real["spectrum"], real["spec_err"])
    out = tmp_path / "real.ecsv"
    argv = ["payne", "fit", "--model", str(shared_data / "payne" / "NN_normalized_spectra.npz"), "--spectra"]
    argv += [str(path), "--mask", str(shared_data / "payne" / "apogee_mask.npz"), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    row = Table.read(out)[0]
    assert row["ID"] == "2M13012770+5754582"
    assert row["CONVERGED"] and not row["FLAGGED"] and not row["ON_BOUND"]
    assert all(np.isfinite(row[n]) and row[f"{n}_ERR"] > 0 for n in LABELS)
    assert abs(row["RV"]) < 5.0 and 0 < row["RV_ERR"] < 1.0
    assert 1.0 < row["REDUCED_CHI2"] < 20.0  # a real star: the emulator is not a perfect model
