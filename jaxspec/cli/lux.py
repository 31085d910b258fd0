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

from jaxspec.cli._args import ArgumentError, blame, existing_files, finite_float, int_at_least, output_path, seed

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


def _column_name(text: str) -> str:
    """An argparse ``type``: a catalog column name (no blanks)."""
    if not text or text != text.strip():
        raise argparse.ArgumentTypeError(f"expected a column name, found {text!r}")
    return text


def _read_catalog(path: Path, names: list[str], id_column: str | None):
    """``apogee.read_allstar``, a missing column blamed on ``--names`` or ``--id-column``, else on ``--labels``."""
    from jaxspec.data import apogee

    try:
        with blame("--labels", file=path):
            return apogee.read_allstar(path, names, id_column=id_column)
    except ArgumentError as exc:
        m = re.search(r"column '(?P<col>.*?)': not found", exc.message)
        if m and m["col"] == id_column:
            raise ArgumentError("--id-column", exc.message) from None
        if m and m["col"] in names:
            raise ArgumentError("--names", exc.message) from None
        raise


def _matched_rows(ids: np.ndarray, files: list[Path], match: str, catalog: Path, id_column: str) -> np.ndarray:
    """Catalog row of each spectrum file: by the id in its name, or in order."""
    if match == "order":
        if len(ids) != len(files):
            raise ArgumentError(
                "--match order",
                f"expected as many catalog rows as spectra ({len(files)}), found {len(ids)} in {catalog}",
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
        raise ArgumentError(
            "--spectra",
            f"star id {star_id(missing[0])!r} of {missing[0]}{more} not found in column {id_column!r} "
            f"of {catalog}; name files aspcapStar-<release>-<id>.fits, or use --match order when the "
            "catalog rows are the files in order",
        )
    return np.asarray(rows)


def _read_spectra(files: list[Path], n_pix: int, progress: bool):
    from jaxspec.data import apogee, mask_bad_pixels

    with blame("--spectra"):
        return mask_bad_pixels(apogee.read_spectra(files, n_pix=n_pix, progress=progress))


def _model_path(out: str, inputs: dict[str, list[Path]]) -> Path:
    """The file ``io.save`` writes for ``--out`` (``.npz`` appended if missing), checked before training."""
    if not out:
        raise ArgumentError("--out", "expected a file name, found ''")
    path = Path(out)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    return output_path(str(path), inputs=inputs)


#: lux.fit's parameters that are command-line arguments here
_FIT_ARGUMENTS = {
    "config.n_latents": "--n-latents",
    "config.omega": "--omega",
    "spectra": "--spectra",
    "labels": "--labels",
    "key": "--seed",
}


def _cmd_train(args: argparse.Namespace) -> int:
    import jax

    from jaxspec import io
    from jaxspec.models import lux

    catalog_path = existing_files([args.labels], "--labels")[0]
    files = existing_files(args.spectra, "--spectra")
    out = _model_path(args.out, {"--labels": [catalog_path], "--spectra": files})
    if len(set(args.names)) != len(args.names):
        raise ArgumentError("--names", f"expected distinct label names, found {args.names}")
    id_column = None if args.match == "order" else args.id_column
    catalog = _read_catalog(catalog_path, args.names, id_column)
    rows = _matched_rows(np.asarray(catalog.ids).astype(str), files, args.match, catalog_path, args.id_column)
    labels = catalog.labels[rows]
    spectra = _read_spectra(files, args.n_pix, not args.no_progress)
    key = jax.random.key(args.seed)  # args.seed in [0, 2**32): checked by the parser
    progress = not args.no_progress
    with blame(None, renames=_FIT_ARGUMENTS):
        config = lux.Config(n_latents=args.n_latents, omega=args.omega)
        fit = lux.fit(spectra, labels, key=key, config=config, progress=progress)
    provenance = {"labels": str(catalog_path), "n_train": len(files), "match": args.match, "seed": args.seed}
    with blame("--out", file=out):
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

    if Path(args.out).suffix.lower() not in _TABLE_FORMATS:
        raise ArgumentError("--out", f"expected a .fits, .csv or .ecsv file name, found {Path(args.out).name!r}")
    model_path = existing_files([args.model], "--model")[0]
    files = existing_files(args.spectra, "--spectra")
    out = output_path(args.out, inputs={"--model": [model_path], "--spectra": files})
    with blame("--model", file=model_path):  # never relays numpy's allow_pickle advice (a FITS or text file)
        model = io.load(model_path, family="lux")
    if len(model.wavelengths) != 1:
        raise ArgumentError(
            "--model", f"{model_path} has {len(model.wavelengths)} spectral outputs; this command reads one"
        )
    n_pix = len(model.wavelengths[0])
    if n_pix not in (7514, 7214):
        raise ArgumentError("--model", f"{model_path} was trained on {n_pix} pixels, not an APOGEE grid (7514 or 7214)")
    spectra = _read_spectra(files, n_pix, not args.no_progress)
    with blame(None, renames={"spectra": "--spectra"}):
        pred = lux.predict_labels(model, spectra, progress=not args.no_progress)
    with blame("--out", file=out):
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
    train.add_argument(
        "--names",
        nargs="+",
        type=_column_name,
        required=True,
        metavar="NAME",
        help="label columns, e.g. TEFF LOGG FE_H",
    )
    train.add_argument("--out", required=True, help="model file to write (.npz)")
    train.add_argument(
        "--id-column", type=_column_name, default="APOGEE_ID", help="catalog column of star ids (default: %(default)s)"
    )
    train.add_argument(
        "--match",
        choices=("id", "order"),
        default="id",
        help="pair files and catalog rows by the id in the file name, or in order (default: %(default)s)",
    )
    train.add_argument(
        "--n-latents", type=int_at_least(2), default=None, help="latent dimension P >= 2 (default: 4 x labels)"
    )
    train.add_argument(
        "--omega", type=finite_float(0.0), default=1e3, help="L2 penalty on the latents, >= 0 (default: %(default)g)"
    )
    train.add_argument("--n-pix", type=int, choices=(7514, 7214), default=7514, help="APOGEE grid (default: 7514)")
    train.add_argument(
        "--seed", type=seed, default=0, help="seed of the initial A and B, in [0, 2**32) (default: %(default)s)"
    )
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
