"""End-to-end demos behind ``jaxspec demo NAME``, one module each (each under 2 minutes on 2 CPU cores).

A demo is ``demo_<name>(*, out, seed, progress, quick)``: it takes a folder
``out``, a ``seed``, ``progress`` and ``quick`` (smaller sizes), prints a short
report of what it computed and returns it as a dict (also written to
``out/<name>_report.json``).  A new family adds its module and a line to
:data:`DEMOS`.
"""

from __future__ import annotations

__all__ = ["DEMOS", "FLAGSHIP"]

#: name -> (module:function, one-line description).
DEMOS: dict[str, tuple[str, str]] = {
    "mock": (
        "jaxspec.cli.demos.mock:demo_mock",
        "generate a mock APOGEE-like survey, summarise it, plot a few spectra",
    ),
    "lux": (
        "jaxspec.cli.demos.lux:demo_lux",
        "train Lux on a mock survey, predict 12 labels of held-out stars from flux",
    ),
    "rsca": (
        "jaxspec.cli.demos.rsca:demo_rsca",
        "RSCA on mock open clusters: doppelganger rates from spectra and from labels",
    ),
    "svae": (
        "jaxspec.cli.demos.svae:demo_svae",
        "scatter VAE on mock Gaia XP: residuals and scatter against the Cannon",
    ),
    "payne": (
        "jaxspec.cli.demos.payne:demo_payne",
        "train a Payne emulator on a mock grid, fit labels and RVs of mock stars with it",
    ),
    "flows": (
        "jaxspec.cli.demos.flows:demo_flows",
        "a Mendis flow on mock spectra: held-out likelihood, outlier ROC AUCs against PPCA, correlation graph",
    ),
    "cyclestarnet": (
        "jaxspec.cli.demos.cyclestarnet:demo_cyclestarnet",
        "Cycle-StarNet on mock synthetic/observed domains: the synthetic gap by Eqs. 9-11, missing lines",
    ),
}
FLAGSHIP = "lux"
