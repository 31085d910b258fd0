"""The jaxspec command: help, info, demo usage errors, lux train and predict."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from astropy.table import Table

from jaxspec import cli


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "info", "lux"):
        assert command in out
    assert "bench" not in out  # the benchmark harness lives in benchmarks/, outside the package


def test_info_prints_versions_and_devices(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert jax.__version__ in out
    assert str(jax.devices()[0].platform) in out
    families = out.split("model families:")[1].splitlines()[0]
    assert {"cannon", "lux", "lux_mlp", "ppca", "rsca", "svae"} <= set(families.replace(",", " ").split())


def test_unknown_demo_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "nonsense"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# -- jaxspec lux train / predict ------------------------------------------------------------------------
LUX_NAMES = ["TEFF", "LOGG", "FE_H"]


def _lux_files(folder, rng, n_stars: int, *, n_pix: int = 7514, prefix: str = "aspcapStar-dr17-2M"):
    """aspcapStar files of a toy linear survey (flux linear in 3 labels) and the labels: (paths, ids, labels)."""
    from tests.test_apogee import _on_chips, write_aspcapstar

    labels = np.column_stack(
        [rng.uniform(4000, 5200, n_stars), rng.uniform(1.0, 3.5, n_stars), rng.uniform(-1.0, 0.4, n_stars)]
    )
    scaled = (labels - [4600.0, 2.25, -0.3]) / [600.0, 1.25, 0.7]
    depth = np.random.default_rng(123).normal(0.0, 0.05, (3, n_pix))  # the same "physics" for every call
    flux = 0.9 - scaled @ depth + rng.normal(0.0, 0.005, (n_stars, n_pix))
    err = np.full_like(flux, 0.005)
    flux[:, 100] = 0.0  # a dead pixel
    paths, ids = [], []
    for i in range(n_stars):
        ids.append(f"{prefix}{i:08d}+{i:07d}".split("-")[-1])
        path = folder / f"{prefix}{i:08d}+{i:07d}.fits"
        f, e = (_on_chips(a[i]) if n_pix == 7514 else np.float32(a[i]) for a in (flux, err))
        paths.append(str(write_aspcapstar(path, f, e)))
    return paths, ids, labels


def _allstar(path, ids, labels, *, extra_rows: int = 0):
    cols = {"APOGEE_ID": list(ids) + [f"2M_EXTRA{i}" for i in range(extra_rows)]}
    for j, name in enumerate(LUX_NAMES):
        cols[name] = np.concatenate([labels[:, j], np.full(extra_rows, -9999.0)])
        cols[f"{name}_ERR"] = np.concatenate([np.full(len(ids), [20.0, 0.05, 0.02][j]), np.full(extra_rows, -9999.0)])
    Table(cols).write(path)
    return str(path)


@pytest.fixture(scope="module")
def lux_run(tmp_path_factory):
    """A model trained by ``jaxspec lux train`` on 40 toy stars, and 8 new stars to predict."""
    folder = tmp_path_factory.mktemp("lux_cli")
    rng = np.random.default_rng(0)
    train_files, ids, labels = _lux_files(folder, rng, 48)
    catalog = _allstar(folder / "allStar.fits", ids[::-1], labels[::-1], extra_rows=3)  # rows in another order
    model = folder / "model.npz"
    argv = ["lux", "train", "--labels", catalog, "--spectra", *train_files[:40], "--names", *LUX_NAMES]
    assert cli.main([*argv, "--out", str(model), "--no-progress"]) == 0
    return {"folder": folder, "model": model, "catalog": catalog, "files": train_files, "labels": labels}


def test_lux_train_writes_a_model_that_io_loads(lux_run, capsys):
    from jaxspec import io
    from jaxspec.models import lux

    model = io.load(lux_run["model"], family="lux")
    assert isinstance(model, lux.Model)
    assert model.label_names == tuple(LUX_NAMES)
    assert model.n_latents == 12 and model.n_pix == (7514,)
    assert io.info(lux_run["model"])["user"]["lux_train"]["n_train"] == 40


@pytest.mark.parametrize("suffix", [".csv", ".fits"])
def test_lux_predict_writes_a_table_of_labels(lux_run, suffix, capsys):
    out = lux_run["folder"] / f"labels{suffix}"
    test_files = lux_run["files"][40:]
    argv = ["lux", "predict", "--model", str(lux_run["model"]), "--spectra", *test_files]
    assert cli.main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert "predicted TEFF, LOGG, FE_H for 8 stars" in capsys.readouterr().out
    table = Table.read(out)
    assert list(table["ID"]) == [f"2M{i:08d}+{i:07d}" for i in range(40, 48)]
    assert np.all(np.asarray(table["FLAGGED"]).astype(str) == "False")  # csv reads bool columns back as text
    truth = lux_run["labels"][40:]
    for j, (name, tol) in enumerate(zip(LUX_NAMES, [150.0, 0.3, 0.15], strict=True)):
        assert np.all(np.isfinite(table[name])) and np.all(table[f"{name}_ERR"] > 0)
        assert np.sqrt(np.mean((table[name] - truth[:, j]) ** 2)) < tol, name
    assert not list(out.parent.glob(f".labels{suffix}.*"))  # the temporary file was renamed


def test_lux_train_reads_file_lists_and_matches_in_order(lux_run, tmp_path):
    catalog = _allstar(tmp_path / "allStar.fits", lux_run["files"][:20], lux_run["labels"][:20])
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(lux_run["files"][:20]) + "\n")
    argv = ["lux", "train", "--labels", catalog, "--spectra", f"@{listing}", "--names", "TEFF", "LOGG"]
    argv += ["--match", "order", "--n-latents", "5", "--out", str(tmp_path / "m"), "--no-progress"]
    assert cli.main(argv) == 0
    assert (tmp_path / "m.npz").is_file()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_spectrum", "--spectra: no such file"),
        ("unknown_label", "column 'VMACRO': not found"),
        ("unknown_star", "not found in column 'APOGEE_ID'"),
        ("order_count", "--match order: expected as many catalog rows as spectra (3), found 51"),
        ("no_folder", "--out: folder"),
        ("corrupt_fits", "not a readable FITS file"),
    ],
)
def test_lux_train_bad_input_is_exit_2_with_a_message(lux_run, tmp_path, capsys, case, message):
    files, catalog, names = lux_run["files"][:3], lux_run["catalog"], list(LUX_NAMES)
    out, extra = tmp_path / "m.npz", []
    if case == "missing_spectrum":
        files = [*files, str(tmp_path / "aspcapStar-dr17-nope.fits")]
    elif case == "unknown_label":
        names = ["TEFF", "VMACRO"]
    elif case == "unknown_star":
        files = [*files, str(tmp_path / "aspcapStar-dr17-2M_NOT_IN_CATALOG.fits")]
        Path(files[-1]).write_bytes(Path(files[0]).read_bytes())
    elif case == "order_count":
        extra = ["--match", "order"]
    elif case == "no_folder":
        out = tmp_path / "nowhere" / "m.npz"
    elif case == "corrupt_fits":
        files = [*files, str(tmp_path / "aspcapStar-dr17-2M00000001+0000001.fits")]
        Path(files[-1]).write_bytes(Path(files[0]).read_bytes()[:5000])
    argv = ["lux", "train", "--labels", catalog, "--spectra", *files, "--names", *names, "--out", str(out)]
    assert cli.main([*argv, *extra, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxspec lux train: error:") and message in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("bad_suffix", "--out: expected a .fits, .csv or .ecsv file name, found 'labels.txt'"),
        ("not_a_model", "--model: "),  # a FITS file: never numpy's advice to load it with allow_pickle
        ("wrong_grid", "lacks pixels of the requested n_pix=7514 grid"),
        ("missing_model", "--model: no such file"),
    ],
)
def test_lux_predict_bad_input_is_exit_2_with_a_message(lux_run, tmp_path, capsys, case, message):
    model, files, out = str(lux_run["model"]), lux_run["files"][40:42], tmp_path / "labels.csv"
    if case == "bad_suffix":
        out = tmp_path / "labels.txt"
    elif case == "not_a_model":
        model = files[0]
    elif case == "wrong_grid":
        files = _lux_files(tmp_path, np.random.default_rng(1), 1, n_pix=7214)[0]
    elif case == "missing_model":
        model = str(tmp_path / "none.npz")
    argv = ["lux", "predict", "--model", model, "--spectra", *files, "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxspec lux predict: error:") and message in err, err
    assert err.count("\n") == 1 and "allow_pickle" not in err, err
    assert not out.exists()


def test_lux_predict_reads_a_real_apogee_spectrum(shared_data, tmp_path, capsys):
    """The real combined APOGEE spectrum in ../shared (The Payne's, 7214 px) as an aspcapStar file."""
    from tests.test_apogee import write_aspcapstar

    files, ids, labels = _lux_files(tmp_path, np.random.default_rng(2), 30, n_pix=7214, prefix="aspcapStar-r12-2M")
    catalog = _allstar(tmp_path / "allStar.fits", ids, labels)
    model = tmp_path / "model.npz"
    argv = ["lux", "train", "--labels", catalog, "--spectra", *files, "--names", *LUX_NAMES, "--n-pix", "7214"]
    assert cli.main([*argv, "--out", str(model), "--no-progress"]) == 0
    real = np.load(shared_data / "payne" / "spectrum_ap_id_2M13012770+5754582_.npz")
    path = write_aspcapstar(tmp_path / "aspcapStar-r12-2M13012770+5754582.fits", real["spectrum"], real["spec_err"])
    out = tmp_path / "real.ecsv"
    argv = ["lux", "predict", "--model", str(model), "--spectra", str(path), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    row = Table.read(out)[0]
    assert row["ID"] == "2M13012770+5754582"
    assert not row["FLAGGED"] and all(np.isfinite(row[n]) for n in LUX_NAMES)
    assert np.isfinite(row["REDUCED_CHI2"]) and row["REDUCED_CHI2"] > 0
