"""The README's Python code blocks and its ``jaxspec`` commands run unchanged.

The blocks run in order, in one namespace, in a temporary folder.  What the
README leaves to the reader is provided here: arrays of their own (``flux``,
``flux_err``, ``wave``, ``values``, ``label_err``), APOGEE files
(``allStar-dr17-synspec_rev1.fits``, ``aspcapStar-dr17-*.fits``, ``new/``,
``paths``), the Gaia archive samples of ``../shared/data`` under the names the
README uses, and their G flux ``g``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

README = Path(__file__).resolve().parents[2] / "README.md"
NAMES = ["TEFF", "LOGG", "FE_H", "MG_FE"]


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def _commands() -> list[str]:
    """The README's ``jaxspec`` shell commands (continuation lines joined); the install commands are CI's."""
    lines = "\n".join(_blocks("bash")).replace("\\\n", " ").splitlines()
    return [line for line in lines if line.startswith("jaxspec ")]


def _apogee_files(folder: Path, rng) -> list[str]:
    """40 training and 5 new aspcapStar files of a toy linear survey, and the allStar catalog of all 45."""
    from tests.test_apogee import _on_chips, write_aspcapstar

    n = 45
    labels = np.column_stack(
        [rng.uniform(4000, 5200, n), rng.uniform(1.0, 3.5, n), rng.uniform(-1.0, 0.4, n), rng.uniform(-0.1, 0.3, n)]
    )
    scaled = (labels - [4600.0, 2.25, -0.3, 0.1]) / [600.0, 1.25, 0.7, 0.2]
    flux = 0.9 - scaled @ rng.normal(0.0, 0.05, (4, 7514)) + rng.normal(0.0, 0.005, (n, 7514))
    (folder / "new").mkdir()
    paths, ids = [], []
    for i in range(n):
        ids.append(f"2M{i:08d}+{i:07d}")
        where = folder / "new" if i >= 40 else folder
        path = where / f"aspcapStar-dr17-{ids[-1]}.fits"
        paths.append(str(write_aspcapstar(path, _on_chips(flux[i]), _on_chips(np.full(7514, 0.005)))))
    cols = {"APOGEE_ID": ids}
    for j, name in enumerate(NAMES):
        cols[name], cols[f"{name}_ERR"] = labels[:, j], np.full(n, [20.0, 0.05, 0.02, 0.02][j])
    Table(cols).write(folder / "allStar-dr17-synspec_rev1.fits")
    return paths[:40]


def _own_arrays(rng) -> dict:
    """The arrays a reader brings to the data-layer block: 50 stars x 100 pixels, 3 labels, some NaN."""
    flux = 1.0 + 0.02 * rng.normal(size=(50, 100))
    flux[3, 10:14] = np.nan
    values = np.column_stack([rng.uniform(4000, 5200, 50), rng.uniform(1, 3.5, 50), rng.uniform(-1, 0.4, 50)])
    values[7, 2] = np.nan
    return {
        "flux": flux,
        "flux_err": np.full_like(flux, 0.01),
        "wave": np.linspace(15100.0, 15300.0, 100),
        "values": values,
        "label_err": np.tile([30.0, 0.05, 0.03], (50, 1)),
    }


@pytest.mark.slow
def test_readme_code_runs_unchanged(shared_data, tmp_path, monkeypatch):
    from jaxspec.data import gaia_xp

    python, commands = _blocks("python"), _commands()
    assert len(python) >= 8 and len(commands) == 3  # data, APOGEE, XP, engine, Lux, RSCA, sVAE, Payne; 3 commands
    rng = np.random.default_rng(0)
    monkeypatch.chdir(tmp_path)
    paths = _apogee_files(tmp_path, rng)
    for suffix in ("csv", "fits"):
        shutil.copy(shared_data / "gaia_xp" / f"XP_CONTINUOUS_RAW.{suffix}", tmp_path / f"XP_CONTINUOUS_RAW.{suffix}")
    shutil.copy(shared_data / "payne" / "NN_normalized_spectra.npz", tmp_path / "NN_normalized_spectra.npz")
    real = gaia_xp.read_xp_continuous(tmp_path / "XP_CONTINUOUS_RAW.fits")
    g = np.asarray(real.coefficients[:, 55])  # the archive sample lacks phot_g_mean_flux: a stand-in
    namespace = {"__name__": "readme", "paths": paths, "g": g, **_own_arrays(rng)}
    for i, block in enumerate(python):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)

    # what the blocks computed is what they say
    assert (tmp_path / "lux.npz").is_file()
    assert namespace["y"].shape == (namespace["mc"].spectra.n_stars, 30)
    assert 0 <= namespace["rate"].rate < 0.5
    assert namespace["mu_real"].shape == (2, 6)
    payne_fit = namespace["fit"]
    assert np.all(np.abs(payne_fit.rv - [1.5, -2.0]) < 0.2) and not payne_fit.flagged.any()
    assert namespace["draws"].spectra.shape == (2, 100, 60) and np.all(np.isfinite(namespace["scores"].nll))

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in commands:
        out = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 0, (command, out.stderr[-2000:])
    table = Table.read(tmp_path / "labels.fits")
    assert len(table) == 5 and set(NAMES) <= set(table.colnames) and not np.any(table["FLAGGED"])
    assert len(Table.read(tmp_path / "payne.fits")) == 5
