"""``jaxspec lux train`` and ``jaxspec lux predict``: Lux on APOGEE files from the command line.

``train`` reads an ``allStar`` catalog and ``aspcapStar`` spectra (one star per
file), matches them by the APOGEE id in each file name (or by order), masks bad
pixels as the Lux paper does, fits Lux and saves the model with
:func:`jaxspec.io.save`.  ``predict`` loads that model and writes the labels
of new spectra, with their errors, reduced chi2 and a flag, to a FITS, CSV or
ECSV table.  Long file lists can be read from a file: ``--spectra @list.txt``
(one path per line).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["add_parser"]

# aspcapStar-dr17-2M00000002+7417074.fits -> 2M00000002+7417074 (APOGEE ids may hold '-', so anchor on the prefix)
_FILE_ID = re.compile(r"^(?:aspcapStar|apStar|asStar)-[^-]+-(?P<id>.+)$")
_TABLE_FORMATS = {".fits": "fits", ".fit": "fits", ".fts": "fits", ".csv": "ascii.csv", ".ecsv": "ascii.ecsv"}


def star_id(path: str | os.PathLike) -> str:
    """The star id in an ``aspcapStar``/``apStar`` file name (the whole stem for other names).

    >>> star_id("data/aspcapStar-dr17-2M00000002+7417074.fits"), star_id("other/star42.fits")
    ('2M00000002+7417074', 'star42')
    """
    stem = Path(path).name.removesuffix(".gz").removesuffix(".fits")
    m = _FILE_ID.match(stem)
    return m["id"] if m else stem


def _existing_files(paths: list[str], arg: str) -> list[Path]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{arg}: no such file: {missing[0]}{more}")
    return [Path(p) for p in paths]


def _writable(out: str, arg: str = "--out") -> Path:
    path = Path(out)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{arg}: folder {path.parent} does not exist")
    return path


def _matched_rows(ids: np.ndarray, files: list[Path], match: str, catalog: Path, id_column: str) -> np.ndarray:
    """Catalog row of each spectrum file: by the id in its name, or in order."""
    if match == "order":
        if len(ids) != len(files):
            raise ValueError(
                f"--match order: expected as many catalog rows as spectra ({len(files)}), found {len(ids)} in {catalog}"
            )
        return np.arange(len(files))
    first: dict[str, int] = {}
    for i, sid in enumerate(ids.tolist()):
        first.setdefault(sid, i)  # a star listed twice (two telescopes): its first row
    rows, missing = [], []
    for path in files:
        row = first.get(star_id(path))
        (missing.append(path) if row is None else rows.append(row))
    if missing:
        more = f" (and {len(missing) - 1} more files)" if len(missing) > 1 else ""
        raise ValueError(
            f"--spectra: star id {star_id(missing[0])!r} of {missing[0]}{more} not found in column {id_column!r} "
            f"of {catalog}; name files aspcapStar-<release>-<id>.fits, or use --match order when the "
            "catalog rows are the files in order"
        )
    return np.asarray(rows)


def _read_spectra(files: list[Path], n_pix: int, progress: bool):
    from jaxspec.data import apogee, mask_bad_pixels

    return mask_bad_pixels(apogee.read_spectra(files, n_pix=n_pix, progress=progress))


def _cmd_train(args: argparse.Namespace) -> int:
    import jax

    from jaxspec import io
    from jaxspec.data import apogee
    from jaxspec.models import lux

    out = _writable(args.out)
    catalog_path = _existing_files([args.labels], "--labels")[0]
    files = _existing_files(args.spectra, "--spectra")
    if len(set(args.names)) != len(args.names):
        raise ValueError(f"--names: expected distinct label names, found {args.names}")
    id_column = None if args.match == "order" else args.id_column
    catalog = apogee.read_allstar(catalog_path, args.names, id_column=id_column)
    rows = _matched_rows(np.asarray(catalog.ids).astype(str), files, args.match, catalog_path, args.id_column)
    labels = catalog.labels[rows]
    spectra = _read_spectra(files, args.n_pix, not args.no_progress)
    if not 0 <= args.seed < 2**32:
        raise ValueError(f"--seed: expected an integer in [0, 2**32), found {args.seed}")
    key = jax.random.key(args.seed)
    progress = not args.no_progress
    config = lux.Config(n_latents=args.n_latents, omega=args.omega)
    fit = lux.fit(spectra, labels, key=key, config=config, progress=progress)
    provenance = {"labels": str(catalog_path), "n_train": len(files), "match": args.match, "seed": args.seed}
    path = io.save(out, fit.model, metadata={"lux_train": provenance})
    objective = fit.history["objective"][-1]
    print(
        f"trained Lux on {len(files)} stars x {spectra.n_pix} pixels, labels {', '.join(args.names)}; "
        f"P = {fit.model.n_latents}, Omega = {fit.model.omega:g}; final objective {objective:.6g}\nwrote {path}"
    )
    return 0


def _table(ids, files, pred):
    from astropy.table import Table

    labels = pred.labels
    values = labels.as_nan()
    ivar = np.asarray(labels.ivar, np.float64)
    err = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.nan)
    table = Table()
    table["ID"] = np.asarray(ids, str)
    table["FILE"] = np.asarray([str(f) for f in files], str)
    for j, name in enumerate(labels.names):
        table[name] = values[:, j]
        table[f"{name}_ERR"] = err[:, j]
    table["REDUCED_CHI2"] = np.asarray(pred.reduced_chi2, np.float64)
    table["FLAGGED"] = np.asarray(pred.flagged, bool)
    return table


def _write_table(table, path: Path) -> None:
    """Write ``table`` in the format of ``path``'s suffix, atomically (a temporary file, then rename)."""
    fmt = _TABLE_FORMATS[path.suffix.lower()]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        table.write(tmp, format=fmt, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cmd_predict(args: argparse.Namespace) -> int:
    from jaxspec import io
    from jaxspec.models import lux

    out = _writable(args.out)
    if out.suffix.lower() not in _TABLE_FORMATS:
        raise ValueError(f"--out: expected a .fits, .csv or .ecsv file name, found {out.name!r}")
    model_path = _existing_files([args.model], "--model")[0]
    files = _existing_files(args.spectra, "--spectra")
    model = io.load(model_path, family="lux")
    if len(model.wavelengths) != 1:
        raise ValueError(f"--model: {model_path} has {len(model.wavelengths)} spectral outputs; this command reads one")
    n_pix = len(model.wavelengths[0])
    if n_pix not in (7514, 7214):
        raise ValueError(f"--model: {model_path} was trained on {n_pix} pixels, not an APOGEE grid (7514 or 7214)")
    spectra = _read_spectra(files, n_pix, not args.no_progress)
    pred = lux.predict_labels(model, spectra, progress=not args.no_progress)
    _write_table(_table([star_id(f) for f in files], files, pred), out)
    print(
        f"predicted {', '.join(model.label_names)} for {len(files)} stars "
        f"({int(np.sum(pred.flagged))} flagged); median reduced chi2 {np.median(pred.reduced_chi2):.3f}\nwrote {out}"
    )
    return 0


def add_parser(sub) -> None:
    """Add ``lux train`` and ``lux predict`` to the subparsers ``sub`` of the ``jaxspec`` command."""
    lux = sub.add_parser(
        "lux",
        help="train Lux on APOGEE files, or predict labels of new spectra with a trained model",
        description=__doc__.split("\n\n")[1],
    )
    actions = lux.add_subparsers(dest="lux_command", metavar="ACTION", required=True)
    files = "aspcapStar files, one star each (or @FILE: paths listed one per line)"

    train = actions.add_parser(
        "train", help="fit Lux to an allStar catalog and aspcapStar spectra", fromfile_prefix_chars="@"
    )
    train.add_argument("--labels", required=True, help="allStar catalog (FITS binary table, labels NAME and NAME_ERR)")
    train.add_argument("--spectra", nargs="+", required=True, metavar="FILE", help=files)
    train.add_argument("--names", nargs="+", required=True, metavar="NAME", help="label columns, e.g. TEFF LOGG FE_H")
    train.add_argument("--out", required=True, help="model file to write (.npz)")
    train.add_argument("--id-column", default="APOGEE_ID", help="catalog column of star ids (default: %(default)s)")
    train.add_argument(
        "--match",
        choices=("id", "order"),
        default="id",
        help="pair files and catalog rows by the id in the file name, or in order (default: %(default)s)",
    )
    train.add_argument("--n-latents", type=int, default=None, help="latent dimension P (default: 4 x labels)")
    train.add_argument("--omega", type=float, default=1e3, help="L2 penalty on the latents (default: %(default)g)")
    train.add_argument("--n-pix", type=int, choices=(7514, 7214), default=7514, help="APOGEE grid (default: 7514)")
    train.add_argument("--seed", type=int, default=0, help="seed of the initial A and B (default: %(default)s)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.set_defaults(func=_cmd_train)

    predict = actions.add_parser(
        "predict", help="labels of new aspcapStar spectra from a trained model", fromfile_prefix_chars="@"
    )
    predict.add_argument("--model", required=True, help="model file written by 'jaxspec lux train'")
    predict.add_argument("--spectra", nargs="+", required=True, metavar="FILE", help=files)
    predict.add_argument("--out", required=True, help="table to write: .fits, .csv or .ecsv")
    predict.add_argument("--no-progress", action="store_true", help="no progress bars")
    predict.set_defaults(func=_cmd_predict)
