"""`jaxspec demo` end to end, as a user runs it (a subprocess of the installed package)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_flagship_demo_runs_and_reports_what_it_computed(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "jaxspec.cli", "demo", "--out", str(tmp_path), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "mock_report.json").read_text())
    assert report["n_stars"] == 5000
    assert report["n_pix"] == 7514
    assert abs(report["noise_pull_std"] - 1.0) < 0.02  # the noise matches the stated errors
    assert 0.002 < report["masked_pixel_frac"] < 0.05
    assert abs(report["labels"]["TEFF"]["missing_frac"] - 0.05) < 0.02
    for figure in report["figures"]:
        assert (tmp_path / figure.split("/")[-1]).stat().st_size > 10_000
    assert "noise check" in proc.stdout
    assert "TEFF" in proc.stdout
