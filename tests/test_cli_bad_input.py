"""The jaxspec command on bad arguments and files: exit status 2 and one line naming the argument, no traceback.

Every argument and file input of ``jaxspec demo``, ``info`` and ``lux train|predict``
gets its hostile values (numbers out of range or not numbers, seeds past 2**32,
missing files, folders, empty, garbage, FITS or text files where a model is
expected, a model of another family or grid, output paths in missing folders or
on an input).  Each must end with exit status 2 and exactly one stderr line
``jaxspec <command>: error: <argument>: <message>`` (issue 14, deliverable 5;
defects 8 and 9).  All cases fail before any training: the whole module runs in
seconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from jaxspec import cli

REFERENCE = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Tiny inputs, good and bad: three 7514-pixel aspcapStar files, a catalog, a 7514-pixel Lux model ..."""
    from jaxspec import io
    from jaxspec.data import _grids
    from jaxspec.data.preprocess import Standardizer
    from jaxspec.models import lux
    from tests.test_apogee import _on_chips, write_aspcapstar

    d = tmp_path_factory.mktemp("cli_bad_input")
    rng = np.random.default_rng(0)
    paths = {"tmp": str(d)}
    for i in range(3):
        flux = _on_chips(np.float32(0.9 + 0.01 * rng.normal(size=7514)))
        paths[f"s{i}"] = str(
            write_aspcapstar(d / f"aspcapStar-dr17-2M{i:08d}.fits", flux, _on_chips(np.full(7514, 0.01)))
        )
    paths["s7214"] = str(write_aspcapstar(d / "aspcapStar-dr17-2M7214.fits", np.ones(7214), np.full(7214, 0.01)))
    ids = [f"2M{i:08d}" for i in range(3)]
    cat = {"APOGEE_ID": ids, "TEFF": [4000.0, 4500.0, 5000.0], "TEFF_ERR": [10.0] * 3}
    Table({**cat, "LOGG": [1.0, 2.0, 3.0], "LOGG_ERR": [0.1] * 3}).write(d / "allStar.fits")
    paths["cat"] = str(d / "allStar.fits")
    m, p, n_pix = 2, 4, 7514
    params = lux.Params(np.zeros((m, p), np.float32), np.zeros((n_pix, p), np.float32), np.zeros(n_pix, np.float32))
    model = lux.Model(
        params=params,
        label_scaler=Standardizer(np.zeros(m, np.float32), np.ones(m, np.float32)),
        label_names=("TEFF", "LOGG"),
        wavelengths=(_grids.apogee_wavelength(n_pix),),
        config=lux.Config(n_latents=p),
    )
    paths["model"] = str(io.save(d / "lux.npz", model))
    paths["cannon"] = str(REFERENCE / "cannon-v0.2.0.dev0.npz")  # a model of another family
    paths["lux150"] = str(REFERENCE / "lux-v0.2.0.dev0.npz")  # a Lux model on 150 pixels, not an APOGEE grid
    np.savez(d / "plain.npz", A=np.ones(3))
    paths["plain"] = str(d / "plain.npz")  # an .npz without jaxspec metadata
    (d / "text.txt").write_text("TEFF LOGG\n4000 1.0\n")
    (d / "empty.fits").write_bytes(b"")
    (d / "garbage.fits").write_bytes(np.random.default_rng(1).bytes(3000))
    (d / "binary.lst").write_bytes(b"\xff\xfe\x00\x81 not text")
    (d / "folder").mkdir()
    (d / "table.csv").mkdir()  # folders with an output's name
    (d / "model.npz").mkdir()
    for name in ("text", "empty", "garbage"):
        paths[name] = str(d / f"{name}{'.txt' if name == 'text' else '.fits'}")
    paths.update(binary=str(d / "binary.lst"), folder=str(d / "folder"), table_dir=str(d / "table.csv"))
    paths["npz_dir"] = str(d / "model.npz")
    return paths


TRAIN = ("lux train", {"--labels": ["{cat}"], "--spectra": ["{s0}", "{s1}", "{s2}"], "--names": ["TEFF", "LOGG"]})
TRAIN[1]["--out"] = ["{tmp}/m.npz"]
PREDICT = ("lux predict", {"--model": ["{model}"], "--spectra": ["{s0}", "{s1}"], "--out": ["{tmp}/labels.csv"]})


def _argv(base, drop=(), extra=(), **values) -> list[str]:
    """``base`` = (command, {option: values}): options replaced by ``values`` (``n_latents=`` is ``--n-latents``)."""
    command, options = base
    options = {k: v for k, v in options.items() if k not in drop}
    for key, value in values.items():
        options["--" + key.replace("_", "-")] = value if isinstance(value, list) else [value]
    argv = command.split()
    for key, value in options.items():
        argv += [key, *value]
    return [*argv, *extra, "--no-progress"]


TOO_BIG = str(2**64)  # 18446744073709551616, defect 9
DEMO = ["demo", "mock", "--quick", "--no-progress", "--out", "{tmp}/demo"]  # were a bad value accepted: a 5 s demo

# (case id, argv with {placeholders}, the start of the one stderr line, a file the line must name)
CASES = [
    # -- the command itself (argparse's own errors: one line too, no usage block)
    ("no_command", [], "jaxspec: error: the following arguments are required: COMMAND", None),
    ("unknown_command", ["nope"], "jaxspec: error: COMMAND: invalid choice: 'nope'", None),
    ("info_extra_argument", ["info", "x"], "jaxspec: error: unrecognized arguments: x", None),
    ("lux_no_action", ["lux"], "jaxspec lux: error: the following arguments are required: ACTION", None),
    # -- jaxspec demo
    ("demo_unknown", ["demo", "nonsense"], "jaxspec demo: error: name: invalid choice: 'nonsense'", None),
    ("demo_seed_2**64", [*DEMO, "--seed", TOO_BIG], "jaxspec demo: error: --seed: expected an integer", None),
    ("demo_seed_2**32", [*DEMO, "--seed", str(2**32)], "jaxspec demo: error: --seed: expected", None),
    ("demo_seed_negative", [*DEMO, "--seed", "-1"], "jaxspec demo: error: --seed: expected", None),
    ("demo_seed_text", [*DEMO, "--seed", "one"], "jaxspec demo: error: --seed: expected", None),
    ("demo_seed_float", [*DEMO, "--seed", "1.5"], "jaxspec demo: error: --seed: expected", None),
    ("demo_out_is_a_file", ["demo", "mock", "--quick", "--out", "{cat}"], "jaxspec demo: error: --out:", "{cat}"),
    (
        "demo_out_under_a_file",
        ["demo", "mock", "--quick", "--out", "{cat}/sub"],
        "jaxspec demo: error: --out:",
        "{cat}",
    ),
    # -- jaxspec lux train: numbers
    ("train_seed_2**64", _argv(TRAIN, seed=TOO_BIG), "jaxspec lux train: error: --seed: expected an integer", None),
    ("train_seed_negative", _argv(TRAIN, seed="-5"), "jaxspec lux train: error: --seed: expected", None),
    ("train_seed_text", _argv(TRAIN, seed="abc"), "jaxspec lux train: error: --seed: expected", None),
    ("train_n_latents_0", _argv(TRAIN, n_latents="0"), "jaxspec lux train: error: --n-latents: expected", None),
    ("train_n_latents_neg", _argv(TRAIN, n_latents="-3"), "jaxspec lux train: error: --n-latents: expected", None),
    ("train_n_latents_text", _argv(TRAIN, n_latents="four"), "jaxspec lux train: error: --n-latents: expected", None),
    ("train_n_latents_float", _argv(TRAIN, n_latents="8.7"), "jaxspec lux train: error: --n-latents: expected", None),
    ("train_n_latents_huge", _argv(TRAIN, n_latents="1" + "0" * 30), "jaxspec lux train: error: --n-latents:", None),
    ("train_n_latents_vs_stars", _argv(TRAIN, n_latents="3"), "jaxspec lux train: error: --n-latents:", None),
    ("train_omega_nan", _argv(TRAIN, omega="nan"), "jaxspec lux train: error: --omega: expected", None),
    ("train_omega_inf", _argv(TRAIN, omega="inf"), "jaxspec lux train: error: --omega: expected", None),
    ("train_omega_overflow", _argv(TRAIN, omega="1e400"), "jaxspec lux train: error: --omega: expected", None),
    ("train_omega_negative", _argv(TRAIN, omega="-1"), "jaxspec lux train: error: --omega: expected", None),
    ("train_omega_text", _argv(TRAIN, omega="big"), "jaxspec lux train: error: --omega: expected", None),
    ("train_n_pix_other", _argv(TRAIN, n_pix="8575"), "jaxspec lux train: error: --n-pix: invalid choice", None),
    ("train_n_pix_text", _argv(TRAIN, n_pix="apogee"), "jaxspec lux train: error: --n-pix:", None),
    ("train_match_other", _argv(TRAIN, match="name"), "jaxspec lux train: error: --match: invalid choice", None),
    # -- lux train: names and columns
    ("train_no_labels", _argv(TRAIN, drop=["--labels"]), "jaxspec lux train: error: the following", None),
    ("train_names_empty", _argv(TRAIN, names=""), "jaxspec lux train: error: --names: expected a column", None),
    ("train_names_twice", _argv(TRAIN, names=["TEFF", "TEFF"]), "jaxspec lux train: error: --names: expected", None),
    ("train_names_unknown", _argv(TRAIN, names=["TEFF", "VMACRO"]), "jaxspec lux train: error: --names:", "{cat}"),
    ("train_id_column_unknown", _argv(TRAIN, id_column="NOPE"), "jaxspec lux train: error: --id-column:", "{cat}"),
    ("train_id_column_empty", _argv(TRAIN, id_column=""), "jaxspec lux train: error: --id-column: expected", None),
    # -- lux train: files
    ("train_labels_missing", _argv(TRAIN, labels="{tmp}/no.fits"), "jaxspec lux train: error: --labels: no such", None),
    ("train_labels_folder", _argv(TRAIN, labels="{folder}"), "jaxspec lux train: error: --labels:", "{folder}"),
    ("train_labels_text", _argv(TRAIN, labels="{text}"), "jaxspec lux train: error: --labels:", "{text}"),
    ("train_labels_empty", _argv(TRAIN, labels="{empty}"), "jaxspec lux train: error: --labels:", "{empty}"),
    ("train_labels_garbage", _argv(TRAIN, labels="{garbage}"), "jaxspec lux train: error: --labels:", "{garbage}"),
    ("train_labels_a_spectrum", _argv(TRAIN, labels="{s0}"), "jaxspec lux train: error: --labels:", "{s0}"),
    ("train_labels_a_model", _argv(TRAIN, labels="{model}"), "jaxspec lux train: error: --labels:", "{model}"),
    ("train_spectra_missing", _argv(TRAIN, spectra=["{s0}", "{tmp}/aspcapStar-dr17-2M9.fits"]), "--spectra:", None),
    ("train_spectra_folder", _argv(TRAIN, spectra=["{s0}", "{folder}"]), "--spectra:", "{folder}"),
    ("train_spectra_empty_name", _argv(TRAIN, spectra=["{s0}", ""]), "--spectra: expected a file name", None),
    ("train_spectra_7214", _argv(TRAIN, extra=["--match", "order"], spectra=["{s0}", "{s1}", "{s7214}"]), "", ""),
    ("train_spectra_garbage", _argv(TRAIN, extra=["--match", "order"], spectra=["{s0}", "{s1}", "{garbage}"]), "", ""),
    ("train_spectra_text", _argv(TRAIN, extra=["--match", "order"], spectra=["{s0}", "{s1}", "{text}"]), "", ""),
    ("train_spectra_empty", _argv(TRAIN, extra=["--match", "order"], spectra=["{s0}", "{s1}", "{empty}"]), "", ""),
    ("train_spectra_a_table", _argv(TRAIN, extra=["--match", "order"], spectra=["{s0}", "{s1}", "{cat}"]), "", ""),
    ("train_spectra_unknown_star", _argv(TRAIN, spectra=["{s0}", "{s7214}"]), "--spectra: star id", "{s7214}"),
    ("train_match_order_count", _argv(TRAIN, match="order", spectra=["{s0}"]), "--match order: expected", "{cat}"),
    ("train_list_missing", _argv(TRAIN, spectra="@{tmp}/no.lst"), "jaxspec lux train: error: @", "{tmp}/no.lst"),
    ("train_list_folder", _argv(TRAIN, spectra="@{folder}"), "jaxspec lux train: error: @", "{folder}"),
    ("train_list_binary", _argv(TRAIN, spectra="@{binary}"), "jaxspec lux train: error: @", "{binary}"),
    ("train_out_no_folder", _argv(TRAIN, out="{tmp}/nowhere/m.npz"), "--out: folder", "{tmp}/nowhere"),
    ("train_out_under_a_file", _argv(TRAIN, out="{cat}/m.npz"), "jaxspec lux train: error: --out:", "{cat}"),
    ("train_out_a_folder", _argv(TRAIN, out="{npz_dir}"), "jaxspec lux train: error: --out:", "{npz_dir}"),
    ("train_out_empty", _argv(TRAIN, out=""), "jaxspec lux train: error: --out: expected a file name", None),
    # -- jaxspec lux predict
    ("predict_no_model", _argv(PREDICT, drop=["--model"]), "jaxspec lux predict: error: the following", None),
    ("predict_model_missing", _argv(PREDICT, model="{tmp}/no.npz"), "--model: no such file", "{tmp}/no.npz"),
    ("predict_model_folder", _argv(PREDICT, model="{folder}"), "--model:", "{folder}"),
    ("predict_model_fits", _argv(PREDICT, model="{cat}"), "--model:", "{cat}"),  # defect 8
    ("predict_model_spectrum", _argv(PREDICT, model="{s0}"), "--model:", "{s0}"),  # defect 8
    ("predict_model_text", _argv(PREDICT, model="{text}"), "--model:", "{text}"),  # defect 8
    ("predict_model_empty", _argv(PREDICT, model="{empty}"), "--model:", "{empty}"),
    ("predict_model_garbage", _argv(PREDICT, model="{garbage}"), "--model:", "{garbage}"),
    ("predict_model_plain_npz", _argv(PREDICT, model="{plain}"), "--model:", "{plain}"),
    ("predict_model_cannon", _argv(PREDICT, model="{cannon}"), "--model:", "{cannon}"),
    ("predict_model_150_pixels", _argv(PREDICT, model="{lux150}"), "--model:", "{lux150}"),
    ("predict_spectra_7214", _argv(PREDICT, spectra=["{s0}", "{s7214}"]), "--spectra:", "{s7214}"),
    ("predict_spectra_missing", _argv(PREDICT, spectra="{tmp}/no.fits"), "--spectra: no such file", "{tmp}/no.fits"),
    ("predict_spectra_folder", _argv(PREDICT, spectra="{folder}"), "--spectra:", "{folder}"),
    ("predict_spectra_garbage", _argv(PREDICT, spectra="{garbage}"), "--spectra:", "{garbage}"),
    ("predict_spectra_a_table", _argv(PREDICT, spectra="{cat}"), "--spectra:", "{cat}"),
    ("predict_spectra_a_model", _argv(PREDICT, spectra="{model}"), "--spectra:", "{model}"),
    ("predict_list_binary", _argv(PREDICT, spectra="@{binary}"), "jaxspec lux predict: error: @", "{binary}"),
    ("predict_out_suffix", _argv(PREDICT, out="{tmp}/labels.txt"), "--out: expected a .fits, .csv or .ecsv", None),
    ("predict_out_no_folder", _argv(PREDICT, out="{tmp}/nowhere/l.csv"), "--out: folder", "{tmp}/nowhere"),
    ("predict_out_under_a_file", _argv(PREDICT, out="{cat}/l.csv"), "--out:", "{cat}"),
    ("predict_out_a_folder", _argv(PREDICT, out="{table_dir}"), "--out:", "{table_dir}"),
    ("predict_out_is_an_input", _argv(PREDICT, out="{s1}"), "--out:", "{s1}"),
]
# the lines of the --spectra cases read in order name the bad file
_SPECTRA = {"7214": "{s7214}", "garbage": "{garbage}", "text": "{text}", "empty": "{empty}", "a_table": "{cat}"}
CASES = [
    (c, argv, head or "jaxspec lux train: error: --spectra:", _SPECTRA[c.split("spectra_")[1]] if file == "" else file)
    for c, argv, head, file in CASES
]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    """``jaxspec.cli.main(argv)`` in-process: (exit status, stdout, stderr); argparse's exits included."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("argv", "head", "file"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument_is_exit_2_and_one_line_naming_it(files, tmp_path, capsys, argv, head, file):
    before = {p: Path(p).stat().st_mtime_ns for k, p in files.items() if k.startswith("s")}
    argv = [a.format(**files) for a in argv]
    code, out, err = _run(argv, capsys)
    assert code == 2, (code, err)
    assert err.endswith("\n") and err.count("\n") == 1, f"expected one stderr line, found {err!r}"
    line = err.rstrip("\n")
    command = "jaxspec lux train" if "--labels" in argv else "jaxspec lux predict" if "--model" in argv else ""
    assert line.startswith(head if head.startswith("jaxspec") else f"{command}: error: {head}"), line
    if file is not None:
        assert file.format(**files) in line, line
    for word in ("Traceback", "allow_pickle", "unsafely"):
        assert word not in err + out
    assert not out
    assert not Path(files["tmp"], "m.npz").exists() and not Path(files["tmp"], "labels.csv").exists()
    assert before == {p: Path(p).stat().st_mtime_ns for k, p in files.items() if k.startswith("s")}  # no input lost


@pytest.mark.parametrize("value", ["0", "1", str(2**32 - 1)])
def test_seeds_in_range_are_accepted(value):
    """The bounds of ``--seed``: [0, 2**32) (jax.random.key keeps 32 bits: 2**32 would be key(0) again)."""
    from jaxspec.cli.main import build_parser

    args = build_parser().parse_args(["demo", "--seed", value])
    assert args.seed == int(value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads and writes every file")
def test_unreadable_input_and_unwritable_folder_are_exit_2(files, tmp_path, capsys):
    locked = tmp_path / "aspcapStar-dr17-2M00000000.fits"
    locked.write_bytes(Path(files["s0"]).read_bytes())
    locked.chmod(0)
    code, _, err = _run(_argv(PREDICT, spectra=str(locked), out=str(tmp_path / "l.csv")), capsys)
    assert code == 2 and err.startswith("jaxspec lux predict: error: --spectra: cannot read") and err.count("\n") == 1
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    code, _, err = _run(_argv(PREDICT, out=str(folder / "l.csv")), capsys)
    code2, _, err2 = _run(["demo", "mock", "--out", str(folder / "sub")], capsys)
    assert code == 2 and "--out: cannot write" in err, err
    assert code2 == 2 and err2.startswith("jaxspec demo: error: --out:") and err2.count("\n") == 1, err2


def test_ctrl_c_is_exit_130_without_a_traceback(monkeypatch, capsys):
    from jaxspec.cli import info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "_run", interrupted)
    try:
        code = cli.main(["info"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped jaxspec.cli.main as a KeyboardInterrupt (a traceback)")
    assert code == 130
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "mock", "--quick", "--no-progress", "--out", "demo"],
        ["lux", "train", "--labels", "a.fits", "--spectra", "b.fits", "--names", "TEFF", "--out", "m.npz"],
    ],
    ids=["demo", "lux_train"],
)
def test_console_script_seed_2_64_is_one_line_exit_2(tmp_path, argv):
    """Defect 9 end to end: ``python -m jaxspec.cli ... --seed 2**64`` (refused by the parser, before any file)."""
    run = subprocess.run(
        [sys.executable, "-m", "jaxspec.cli", *argv, "--seed", TOO_BIG],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=300,
    )
    command = " ".join(argv[:2] if argv[0] == "lux" else argv[:1])
    expected = f"jaxspec {command}: error: --seed: expected an integer in [0, 2**32), found {TOO_BIG}\n"
    assert (run.returncode, run.stderr) == (2, expected)
    assert not list(tmp_path.iterdir())  # nothing written
