"""Hypothesis: the Gaia XP reader on truncated and corrupted copies of the real archive files (issue 14).

Every outcome is either a ``ValueError``/``OSError`` whose message names the file, or a read
that loses nothing: exactly the original sources, or for a cut at a row boundary, a deleted
or a duplicated line, exactly the sources that are left.  A few replaced bytes may change
a number (text and binary formats carry no checksum), but never the number of sources or
which bands they have, and what is read is always valid (finite covariances, counts in range).
"""

from __future__ import annotations

import gzip
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from jaxspec.data.gaia_xp import N_COEFF, XPSpectra, read_xp_continuous

FIELDS = (
    "source_id",
    "coefficients",
    "errors",
    "correlations",
    "standard_deviation",
    "band_present",
    "chi_squared",
    "degrees_of_freedom",
    "n_measurements",
    "n_relevant_bases",
)
# bytes that matter to the parsers (delimiters, quotes, brackets, digits, signs), and any byte at all
BYTES = st.one_of(st.sampled_from(b',"\n\r()[]<>-+.0123456789eE \x00'), st.integers(0, 255))
# no explain phase: its tracer (sys.settrace) segfaulted Python 3.11 here once a test had failed
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)
FUZZ = settings(max_examples=100, deadline=None, phases=PHASES, derandomize=True)  # the same cases in every CI run


class _Files(dict):
    """``{name: (bytes, XPSpectra)}``, with a short repr: hypothesis prints the arguments of a failing test, and
    a repr of 700 kB makes it warn, which ``filterwarnings = error`` turns into a confusing FlakyStrategyDefinition."""

    def __repr__(self) -> str:
        return f"<{len(self)} Gaia XP files: {', '.join(self)}>"


@pytest.fixture(scope="module")
def originals(shared_data) -> _Files:
    """Every real file (csv, ecsv, fits and xml; with and without a missing band), its bytes and its reading."""
    files = sorted((shared_data / "gaia_xp").iterdir())
    assert {f.suffix for f in files} == {".csv", ".ecsv", ".fits", ".xml"}
    return _Files({f.name: (f.read_bytes(), read_xp_continuous(f)) for f in files})


def _draw_file(data, originals: _Files) -> tuple[str, bytes, XPSpectra]:
    name = data.draw(st.sampled_from(sorted(originals)), label="file")  # the name: a short repr in a report
    return name, *originals[name]


def _read(name: str, data: bytes) -> XPSpectra | None:
    """Read ``data`` written as ``name``: the result, or None after a ValueError/OSError that names the file.

    Any other exception fails the test.  Warnings are recorded, not raised: what counts is what was read.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            try:
                return read_xp_continuous(path)
            except (ValueError, OSError) as exc:
                assert str(path) in str(exc), f"the message does not name the file: {exc}"
                return None


def _same(a: XPSpectra, b: XPSpectra) -> bool:
    return a.n_sources == b.n_sources and all(
        np.array_equal(getattr(a, f), getattr(b, f), equal_nan=getattr(a, f).dtype.kind == "f") for f in FIELDS
    )


def _assert_exact(xp: XPSpectra, ref: XPSpectra, candidates: list[list[int]], what: str) -> None:
    assert any(_same(xp, ref.take(rows)) for rows in candidates), (
        f"{what}: read {xp!r} with source_id {xp.source_id.tolist()}, which is not the original's "
        f"{ref.source_id.tolist()} nor one of the allowed selections {candidates}: silent data loss or change"
    )


def _assert_valid(xp: XPSpectra) -> None:
    """What a read may never return, whatever the file: NaN/inf where a band is present, counts out of range."""
    present = np.repeat(xp.band_present, N_COEFF, axis=1)
    assert xp.band_present.any(axis=1).all()
    assert np.isfinite(xp.coefficients[present]).all() and np.isnan(xp.coefficients[~present]).all()
    assert np.isfinite(xp.errors[present]).all() and (xp.errors[present] > 0).all()
    assert (np.abs(xp.correlations[xp.band_present]) <= 1).all()
    assert np.isfinite(xp.standard_deviation[xp.band_present]).all()
    assert ((xp.n_relevant_bases >= 0) & (xp.n_relevant_bases <= N_COEFF)).all()
    assert (xp.degrees_of_freedom >= 0).all() and (xp.n_measurements >= 0).all()
    for formal in (False, True):
        assert np.isfinite(xp.covariance(formal=formal)).all()


def _complete_rows(name: str, data: bytes) -> int | None:
    """The data rows of a csv or ecsv file cut after a line end (None: another format, or a cut inside a line)."""
    if not name.endswith((".csv", ".ecsv")) or not data.endswith(b"\n"):
        return None
    lines = [line for line in data.split(b"\n") if line.strip() and not line.startswith(b"#")]
    return len(lines) - 1  # the column names come first


def _line_starts(data: bytes) -> list[int]:
    return [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n") and i + 1 < len(data)]


@FUZZ
@given(data=st.data())
def test_truncated_files(originals, data):
    name, raw, ref = _draw_file(data, originals)
    at_line = data.draw(st.booleans(), label="at a line start")
    cut = data.draw(st.sampled_from(_line_starts(raw)) if at_line else st.integers(0, len(raw) - 1), label="cut")
    xp = _read(name, raw[:cut])
    if xp is not None:  # only a cut at a row boundary of a text file may read, and then exactly the rows before it
        rows = _complete_rows(name, raw[:cut])
        if not raw[cut:].strip():  # only trailing white space cut (after </VOTABLE>, say): all of it
            rows = ref.n_sources
        assert rows is not None, f"{name} cut at {cut} of {len(raw)} bytes: read {xp!r}, expected an error"
        _assert_exact(xp, ref, [list(range(rows))], f"{name} cut at {cut} after {rows} complete rows")


@FUZZ
@given(data=st.data())
def test_files_with_replaced_bytes(originals, data):
    name, raw, ref = _draw_file(data, originals)
    new = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 2), label="n")):
        new[data.draw(st.integers(0, len(raw) - 1), label="at")] = data.draw(BYTES, label="byte")
    xp = _read(name, bytes(new))
    if xp is not None:
        assert xp.n_sources == ref.n_sources, f"{name}: {xp.n_sources} sources read of {ref.n_sources}"
        np.testing.assert_array_equal(xp.band_present, ref.band_present, err_msg=f"{name}: a band lost")
        _assert_valid(xp)


@FUZZ
@given(data=st.data())
def test_files_with_a_line_deleted_or_duplicated(originals, data):
    name, raw, ref = _draw_file(data, originals)
    lines = raw.splitlines(keepends=True)
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    duplicate = data.draw(st.booleans(), label="duplicate")
    xp = _read(name, b"".join(lines[:i] + lines[i : i + 1] * (2 if duplicate else 0) + lines[i + 1 :]))
    if xp is not None:  # a header line that changes nothing, or one source row removed or repeated
        n = ref.n_sources
        rows = [sorted([*range(n), j]) if duplicate else [k for k in range(n) if k != j] for j in range(n)]
        _assert_exact(xp, ref, [list(range(n)), *rows], f"{name} line {i} {'duplicated' if duplicate else 'deleted'}")


@settings(max_examples=40, deadline=None, phases=PHASES, derandomize=True)
@given(data=st.data())
def test_damaged_gzip_files(originals, data):
    """A damaged ``.gz`` is an error or reads exactly (a flip in the gzip header's time stamp changes nothing)."""
    name, raw, ref = _draw_file(data, originals)
    z = bytearray(gzip.compress(raw, mtime=0))
    if data.draw(st.booleans(), label="truncate"):
        z = z[: data.draw(st.integers(0, len(z) - 1), label="cut")]
    else:
        z[data.draw(st.integers(0, len(z) - 1), label="at")] ^= data.draw(st.integers(1, 255), label="xor")
    xp = _read(name + ".gz", bytes(z))
    if xp is not None:
        _assert_exact(xp, ref, [list(range(ref.n_sources))], f"{name}.gz")
