"""The package's shape: loaders import no training library, families load lazily, old paths keep working."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("flax", "optax", "jaxopt", "distrax")


def _modules_after(code: str) -> set[str]:
    """The top-level names in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    script = f"import sys\n{code}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "code",
    [
        "import jaxspec.data.apogee",
        "import jaxspec.data.gaia_xp",
        "import jaxspec.data.mock",
        "import jaxspec, jaxspec.io, jaxspec.metrics",
        "import jaxspec.models",
    ],
)
def test_loaders_import_no_training_library(code):
    assert not set(HEAVY) & _modules_after(code)


def test_families_import_on_first_use():
    loaded = _modules_after("import jaxspec.models as m; m.lux; import jaxspec.models.lux as lux; lux.fit")
    assert not {"flax", "distrax"} & loaded  # lux needs the solvers (jaxopt, optax), no networks
    assert "flax" in _modules_after("from jaxspec.models import scatter_vae")


def test_public_paths_of_the_previous_layout_still_import():
    from jaxspec import cli, plots
    from jaxspec.models import cannon, lux, ppca, rsca, scatter_vae

    assert callable(cli.main) and callable(plots.plot_spectra) and callable(plots.plot_cv_grid)
    for module in (cannon, lux, ppca, rsca, scatter_vae):
        assert module.__all__ and all(hasattr(module, name) for name in module.__all__)
