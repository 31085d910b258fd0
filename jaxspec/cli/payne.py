"""``jaxspec payne fit``: labels and radial velocities of APOGEE spectra with a Payne emulator.

``fit`` loads an emulator (The Payne's own ``.npz``, either format, or a
model saved by ``jaxspec.io.save``), reads ``aspcapStar`` spectra (one star
per file) onto the emulator's APOGEE grid, fits every star's labels and
radial velocity at once with :func:`jaxspec.models.payne.fit_labels`, and
writes one row per file (labels, their errors, RV, chi2, reduced chi2 and
flags) to a FITS, CSV or ECSV table.  Long file lists can be read from a
file: ``--spectra @list.txt`` (one path per line).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from jaxspec.cli._args import ArgumentError, blame, existing_files, int_at_least, output_path
from jaxspec.cli.lux import _TABLE_FORMATS, _read_spectra, _write_table, star_id

__all__ = ["add_parser", "read_mask"]

#: The APOGEE grids the aspcapStar reader trims to (chip gaps removed): DR13-17 and DR11-12 (The Payne's).
_APOGEE_PIX = (7514, 7214)


def _load_model(path: Path):
    """A payne.Model from a jaxspec model file or from The Payne's own ``.npz``, on its APOGEE grid."""
    from jaxspec import io
    from jaxspec.data._grids import apogee_wavelength
    from jaxspec.models import payne

    with blame("--model", file=path):
        try:
            io.info(path)  # only a jaxspec model file has the metadata entry
        except ValueError:
            model = payne.load(path)
        else:
            model = io.load(path, family="payne")
    n_pix = model.n_pix
    if n_pix not in _APOGEE_PIX:
        raise ArgumentError("--model", f"{path} emulates {n_pix} pixels, not an APOGEE grid (7514 or 7214)")
    grid = apogee_wavelength(n_pix)
    if model.wavelength is None:  # a Payne file stores no grid: a 7514-pixel one is on the DR13-17 grid
        model = dataclasses.replace(model, wavelength=grid)
    elif not np.allclose(model.wavelength, grid, rtol=1e-7, atol=0):
        w = model.wavelength
        raise ArgumentError(
            "--model",
            f"{path} is on a {n_pix}-pixel grid {w[0]:.2f}-{w[-1]:.2f} A, not the APOGEE grid of the "
            f"aspcapStar reader ({grid[0]:.2f}-{grid[-1]:.2f} A)",
        )
    return model


def read_mask(path: Path, n_pix: int) -> np.ndarray:
    """The pixel mask ``(n_pix,)`` (True = exclude) in an ``.npz`` file, e.g. The Payne's ``apogee_mask.npz``.

    The file holds one boolean (or 0/1) array of ``n_pix`` entries, or an
    ``apogee_mask`` entry among others (read by :func:`jaxspec.io.read_npz`,
    never unpickling); anything else is an
    :class:`~jaxspec.cli._args.ArgumentError` of ``--mask``.
    """
    from jaxspec import io

    with blame("--mask", file=path):
        entries = io.read_npz(path)
    if len(entries) == 1:
        (mask,) = entries.values()
    elif "apogee_mask" in entries:
        mask = entries["apogee_mask"]
    else:
        raise ArgumentError(
            "--mask", f"{path}: expected one array or an 'apogee_mask' entry, found {sorted(entries) or 'none'}"
        )
    if mask.shape != (n_pix,) or mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
        raise ArgumentError(
            "--mask",
            f"{path}: expected a boolean array of {n_pix} pixels (the model's grid, True = exclude), "
            f"found {mask.dtype} {mask.shape}",
        )
    return mask.astype(bool)


def _table(files: list[Path], fit):
    """One row per file: id, file, each label and its error, RV, RV error, chi2, reduced chi2 and the flags."""
    from astropy.table import Table

    labels = fit.labels
    values = labels.as_nan()  # a placeholder star (no data, a non-finite fit) has NaN labels
    var = np.diagonal(np.asarray(fit.covariance, np.float64), axis1=1, axis2=2)
    err = np.where(np.isfinite(var) & (var >= 0), np.sqrt(np.abs(var)), np.nan)
    err = np.where(np.isnan(values), np.nan, err)
    rv_err = np.asarray(fit.rv_err, np.float64)
    table = Table()
    table["ID"] = np.asarray([star_id(f) for f in files], str)
    table["FILE"] = np.asarray([str(f) for f in files], str)
    for j, name in enumerate(labels.names):
        table[name] = values[:, j]
        table[f"{name}_ERR"] = err[:, j]
    table["RV"] = np.asarray(fit.rv, np.float64)
    table["RV_ERR"] = np.where(np.isfinite(rv_err), rv_err, np.nan)
    table["CHI2"] = np.asarray(fit.chi2, np.float64)
    table["REDUCED_CHI2"] = np.asarray(fit.reduced_chi2, np.float64)
    for column in ("converged", "on_bound", "flagged"):
        table[column.upper()] = np.asarray(getattr(fit, column), bool)
    table["RV"].unit = table["RV_ERR"].unit = "km/s"
    return table


def _cmd_fit(args: argparse.Namespace) -> int:
    from jaxspec.models import payne

    if Path(args.out).suffix.lower() not in _TABLE_FORMATS:
        raise ArgumentError("--out", f"expected a .fits, .csv or .ecsv file name, found {Path(args.out).name!r}")
    model_path = existing_files([args.model], "--model")[0]
    files = existing_files(args.spectra, "--spectra")
    mask_path = existing_files([args.mask], "--mask")[0] if args.mask is not None else None
    inputs = {"--model": [model_path], "--spectra": files, **({"--mask": [mask_path]} if mask_path else {})}
    out = output_path(args.out, inputs=inputs)
    model = _load_model(model_path)
    mask = read_mask(mask_path, model.n_pix) if mask_path is not None else None
    progress = not args.no_progress
    spectra = _read_spectra(files, model.n_pix, progress)
    renames = {"spectra": "--spectra", "mask": "--mask", "n_starts": "--n-starts", "chunk_size": "--chunk-size"}
    with blame(None, renames=renames):
        fit = payne.fit_labels(
            model,
            spectra,
            rv=not args.no_rv,
            mask=mask,
            n_starts=args.n_starts,
            chunk_size=args.chunk_size,
            progress=progress,
        )
    with blame("--out", file=out):
        _write_table(_table(files, fit), out)
    ok = ~np.asarray(fit.flagged)
    median = f"{np.median(fit.reduced_chi2[ok]):.3f}" if ok.any() else "n/a"
    print(
        f"fitted {', '.join(model.label_names)}{'' if args.no_rv else ' and RV'} of {len(files)} stars "
        f"({int(np.sum(fit.flagged))} flagged, {int(np.sum(fit.on_bound))} on a bound); "
        f"median reduced chi2 {median}\nwrote {out}"
    )
    return 0


def add_parser(sub) -> None:
    """Add ``payne fit`` to the subparsers ``sub`` of the ``jaxspec`` command."""
    payne = sub.add_parser(
        "payne",
        help="fit labels and radial velocities of APOGEE spectra with a Payne emulator",
        description=__doc__.split("\n\n")[1],
    )
    actions = payne.add_subparsers(dest="payne_command", metavar="ACTION", required=True)
    fit = actions.add_parser(
        "fit", help="labels, errors, RV and chi2 of aspcapStar spectra, one table row each", fromfile_prefix_chars="@"
    )
    fit.add_argument("--model", required=True, help="Payne emulator (.npz, either Payne format, or a jaxspec model)")
    fit.add_argument(
        "--spectra",
        nargs="+",
        required=True,
        metavar="FILE",
        help="aspcapStar files, one star each (or @FILE: paths listed one per line)",
    )
    fit.add_argument("--out", required=True, help="table to write: .fits, .csv or .ecsv")
    fit.add_argument(
        "--mask", default=None, help="pixels to exclude: .npz of a bool array on the model's grid (apogee_mask.npz)"
    )
    fit.add_argument("--no-rv", action="store_true", help="take the spectra at rest (no radial velocity fitted)")
    fit.add_argument(
        "--n-starts", type=int_at_least(1), default=1, help="starts per star, the best kept (default: %(default)s)"
    )
    fit.add_argument(
        "--chunk-size", type=int_at_least(1), default=1024, help="stars per compiled chunk (default: %(default)s)"
    )
    fit.add_argument("--no-progress", action="store_true", help="no progress bars")
    fit.set_defaults(func=_cmd_fit)
