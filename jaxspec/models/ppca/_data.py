"""Data layout for :mod:`jaxspec.models.ppca`: validation, one pass over the input, fixed-size chunks.

Two layouts.  Sparse (unweighted, at most ``_DENSE_FRACTION`` missing): the
data are used in place when JAX can read them without a copy (C-contiguous,
64-byte aligned, default float dtype, e.g. an ``np.memmap`` of a ``.npy``),
else copied once into an aligned buffer (also when they hold NaN/inf, which
become 0 there); the missing entries of each chunk are listed as padded
``(chunk, m)`` pixel indices and values.  Dense: aligned copies of
``w (x - mean)`` and of the weights ``w``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.data.containers import Spectra
from jaxspec.models._common import check_stars

_DENSE_FRACTION = 0.1  # above this fraction of missing entries the dense per-star layout is used
_SCAN_THREADS = 2  # threads scanning the data: numpy releases the GIL, so two overlap the copy of one chunk
# with the checks of the next; more would compete with XLA's own threads for the cores
_BLOCKS = 4  # blocks of stars per chunk, sorted by missing count, each padded to its own width


class _Data(NamedTuple):
    """The data in fixed-size chunks, with what the E-step needs (private)."""

    src: np.ndarray  # sparse: the data as given (aligned, finite); dense: w * (x - mean), 0 where missing
    w: np.ndarray | None  # dense: (n_pad, D) weights; sparse: None
    idx: list  # sparse: per chunk (perm, *blocks): star order, then (b, m_j) int32 missing pixels padded with D
    xm: list  # sparse: per chunk the (b, m_j) data values at those pixels (0 for padding)
    tail: np.ndarray | None  # sparse: the last, partial chunk padded with zero rows
    mean: np.ndarray
    n: int
    chunk: int
    sq: float  # sum of w (x - mean)^2 over observed entries
    n_obs: int
    sum_log_w: float


def _inputs(data, ivar, mask):
    if isinstance(data, Spectra):
        if ivar is not None:
            raise ValueError("ivar: a Spectra brings its own ivar; do not pass ivar= as well")
        data, ivar = data.flux, data.ivar
    data, ivar, mask = (np.asarray(a) if isinstance(a, jax.Array) else a for a in (data, ivar, mask))
    if not hasattr(data, "shape") or len(data.shape) != 2:
        raise ValueError(f"spectra: expected a 2-D array (n_stars, n_pix), found {getattr(data, 'shape', type(data))}")
    check_stars(data.shape[0], "spectra")
    for name, arr in (("spectra", data), ("ivar", ivar)):
        if arr is not None and np.dtype(arr.dtype).kind not in "biuf":
            raise TypeError(f"{name}: expected a real numeric array, found dtype {arr.dtype}")
    for name, arr in (("ivar", ivar), ("mask", mask)):
        if arr is not None and tuple(arr.shape) != tuple(data.shape):
            raise ValueError(f"{name}: expected shape {tuple(data.shape)} like spectra, found {tuple(arr.shape)}")
    if mask is not None and np.dtype(mask.dtype) != np.bool_:
        raise TypeError(f"mask: expected a boolean array (True = missing), found dtype {mask.dtype}")
    return data, ivar, mask


def _chunk(chunk_size, n):
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, found {chunk_size!r}")
    chunk = min(int(chunk_size), n)
    return -(-chunk // 16) * 16  # row offsets stay 64-byte aligned for any D


def _dtype():
    """float32, or float64 under ``JAX_ENABLE_X64``."""
    return np.dtype(np.float64 if jax.config.jax_enable_x64 else np.float32)


def _missing(x, ivar, mask, lo, hi):
    xc = np.asarray(x[lo:hi], dtype=_dtype())
    miss = ~np.isfinite(xc)
    ivc = None
    if ivar is not None:
        ivc = np.asarray(ivar[lo:hi], dtype=_dtype())
        if not (np.all(ivc >= 0) and np.isfinite(ivc.sum(dtype=np.float64))):  # NaN, inf, < 0
            raise ValueError(f"ivar: expected finite values >= 0, found bad values in rows {lo}..{hi - 1}")
        miss |= ivc == 0
    if mask is not None:
        miss |= np.asarray(mask[lo:hi])
    return xc, miss, ivc


def _load(x, ivar, mask, chunk, weighted, mean=None, scale=None):
    """The sparse layout when unweighted and at most ``_DENSE_FRACTION`` is missing, else the dense one."""
    if not weighted:
        prep = _scan_sparse(x, ivar, mask, chunk, mean)
        if prep is not None:
            return prep, None
    if mean is None:
        mean, scale = _mean(x, ivar, mask, weighted, chunk)
    return _prepare_dense(x, ivar, mask, mean, scale if weighted else None, chunk), scale


def _mean(x, ivar, mask, weighted, chunk):
    """Per-pixel (weighted) mean of the observed values and the mean observed ivar."""
    n, d = x.shape
    s, sw, ivsum, n_obs = np.zeros(d), np.zeros(d), 0.0, 0
    for lo in range(0, n, chunk):
        xc, miss, ivc = _missing(x, ivar, mask, lo, min(lo + chunk, n))
        wc = np.where(miss, 0.0, ivc if weighted else 1.0).astype(_dtype())
        s += np.sum(np.where(miss, 0.0, xc) * wc, axis=0, dtype=np.float64)
        sw += wc.sum(0, dtype=np.float64)
        n_obs += int(miss.size - miss.sum())
        if ivc is not None:
            ivsum += float(np.where(miss, 0.0, ivc).sum(dtype=np.float64))
    mean = (s / np.where(sw > 0, sw, 1.0)).astype(_dtype())
    return mean, (ivsum / max(n_obs, 1) if ivar is not None else None)


def _aligned(shape, fill=None):
    size = int(np.prod(shape))
    buf = np.empty(size + 16, _dtype())
    off = (-buf.ctypes.data % 64) // buf.itemsize
    out = buf[off : off + size].reshape(shape)
    if fill is not None:
        out[...] = fill
    return out


def _zero_copy(x):
    """``x`` itself when JAX can use it without a copy (aligned, C-contiguous, default float), else None."""
    if isinstance(x, jax.Array):
        x = np.asarray(x)
    ok = isinstance(x, np.ndarray) and x.dtype == _dtype() and x.flags.c_contiguous
    return x if ok and x.ctypes.data % 64 == 0 else None


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A per-thread work array reused from chunk to chunk.

    Fresh chunk-sized temporaries (megabytes each) are mapped and unmapped by the allocator
    every time, and the page faults cost more kernel time than the scan's arithmetic.
    """
    bufs = _SCRATCH.__dict__.setdefault("bufs", {})
    key = (name, tuple(shape), np.dtype(dtype))
    if key not in bufs:
        bufs[key] = np.empty(shape, dtype)
    return bufs[key]


def _flags(ivar, mask, lo, hi, d):
    """Missing entries of rows ``lo:hi`` flagged by ``ivar == 0`` or ``mask`` (non-finite data are found later)."""
    miss = None
    if ivar is not None:
        ivc = np.asarray(ivar[lo:hi], dtype=_dtype())
        if not (np.all(ivc >= 0) and np.isfinite(ivc.sum(dtype=np.float64))):  # NaN, inf, < 0
            raise ValueError(f"ivar: expected finite values >= 0, found bad values in rows {lo}..{hi - 1}")
        miss = ivc == 0
    if mask is not None:
        miss = np.array(mask[lo:hi]) if miss is None else miss | np.asarray(mask[lo:hi])
    if miss is None:
        miss = _scratch("miss", (hi - lo, d), bool)
        miss[...] = False
    return miss


def _moments(x, miss, shift):
    """Column sums of ``x - shift`` and of its square over the entries not ``miss`` (float64), and their total.

    Summed in float32 over blocks of 16 rows, then in float64: accurate, and no float64 copy of the data.
    """
    y = np.subtract(x, shift, out=_scratch("centred", x.shape, _dtype()), dtype=_dtype())
    np.copyto(y, 0.0, where=miss)
    y = y.reshape(-1, 16, y.shape[1])
    s1 = np.add.reduce(y, axis=1).sum(0, dtype=np.float64)
    return s1, np.einsum("bij,bij->bj", y, y).sum(0, dtype=np.float64), float(s1.sum())


def _nonzero(miss):
    """``np.nonzero`` of a C-contiguous boolean matrix (``np.flatnonzero`` is several times faster)."""
    return np.divmod(np.flatnonzero(miss), miss.shape[1])


def _file_offset(x: np.memmap) -> int | None:
    """Where ``x``'s first byte lies in its file: a slice of a map keeps its parent's ``offset``
    attribute, so the position comes from the address of ``x`` in the parent's mapping."""
    mm = getattr(x, "_mmap", None)
    if mm is None:
        return None
    try:
        start = int(x.offset) - int(x.offset) % mmap.ALLOCATIONGRANULARITY  # the mapping begins here in the file
        base = np.frombuffer(mm, np.uint8).ctypes.data
    except (TypeError, ValueError, BufferError):
        return None
    pos = start + x.ctypes.data - base
    return pos if pos >= 0 else None


@contextlib.contextmanager
def _row_reader(x):
    """``read(lo, hi, out)``: rows ``lo:hi`` of a file-backed ``np.memmap`` into ``out`` by ``os.preadv``; or None.

    A read costs the kernel less system time than copying through the map, which takes
    a page fault every few pages (the full-survey RSCA run, benchmarks/RESULTS.md).
    Used for a C-contiguous map or contiguous slice of one (the field rows of an RSCA
    survey, say) that lies within its file, and whose first row read this way equals
    the mapped one bit for bit.
    """
    ok = isinstance(x, np.memmap) and x.flags.c_contiguous and x.dtype == _dtype() and x.size > 0
    fd, offset = None, _file_offset(x) if ok else None
    if offset is not None and hasattr(os, "preadv") and getattr(x, "filename", None):
        with contextlib.suppress(OSError):
            fd = os.open(x.filename, os.O_RDONLY)
            if offset + x.nbytes > os.fstat(fd).st_size:
                os.close(fd)
                fd = None
    if fd is None:
        yield None
        return
    row = x.shape[1] * x.itemsize

    def read(lo, hi, out):
        view, pos = memoryview(out).cast("B"), offset + lo * row
        while view.nbytes:
            got = os.preadv(fd, [view], pos)
            if got <= 0:
                raise OSError(f"data: could not read rows {lo}..{hi - 1} from {x.filename}")
            view, pos = view[got:], pos + got

    try:
        probe = np.empty((1, x.shape[1]), x.dtype)
        try:
            read(0, 1, probe)
            same = probe.tobytes() == np.asarray(x[:1]).tobytes()
        except OSError:
            same = False
        yield read if same else None
    finally:
        os.close(fd)


def _scan_chunk(x, src, ivar, mask, lo, chunk, shift, copy, read=None):
    """Missing entries, moments and missing values of rows ``lo:lo+chunk`` (run in worker threads).

    Non-finite values become missing entries; they are zeroed in ``copy`` when there is
    one, otherwise the sanitised rows are returned in ``fixed`` (the caller then copies).
    """
    n, d = x.shape
    hi = min(lo + chunk, n)
    miss = _flags(ivar, mask, lo, hi, d)
    if copy is not None:
        if read is not None:
            read(lo, hi, copy[lo:hi])
        else:
            copy[lo:hi] = x[lo:hi]
    xc = src[lo:hi]
    bad = np.isfinite(xc, out=_scratch("bad", xc.shape, bool))
    np.logical_not(bad, out=bad)
    fixed = None
    if bad.any():
        miss |= bad
        if copy is not None:
            np.copyto(xc, 0.0, where=bad)
        else:
            xc = fixed = np.where(bad, 0.0, xc).astype(_dtype())
    rows, cols = _nonzero(miss)
    tail = None
    if hi - lo < chunk:  # the last, partial chunk: padded with zero rows (missing for the moments)
        tail = _aligned((chunk, d), 0.0)
        tail[: hi - lo] = xc
        xc, miss = tail, np.concatenate([miss, np.ones((chunk - hi + lo, d), bool)])
    y1, y2, _ = _moments(xc, miss, shift)
    counts = np.bincount(rows, minlength=chunk)
    pos = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    observed = (hi - lo) - np.bincount(cols, minlength=d)
    return y1, y2, observed, (rows, pos, cols, int(counts.max(initial=0))), xc[rows, cols], tail, fixed


def _scan_sparse(x, ivar, mask, chunk, mean):
    """One pass: missing-entry indices and values, mean and residual sum of squares; None if too much is missing.

    Chunks are scanned by two threads (numpy releases the GIL).  Column sums run on the
    data shifted by the first chunk's mean (float32 sums stay accurate); non-finite data
    are found there and turned into missing entries of a sanitised copy, made up front
    when the first chunk has any.
    """
    n, d = x.shape
    src, copy = _zero_copy(x), None
    first = np.asarray(x[: min(chunk, n)], dtype=_dtype())
    finite = np.isfinite(first)
    if src is None or not finite.all():
        copy = src = _aligned((n, d))
    ok = ~_flags(ivar, mask, 0, first.shape[0], d) & finite
    _SCRATCH.__dict__.pop("bufs", None)  # this thread's scratch (the workers' go with their threads)
    shift = (np.where(ok, first, 0.0).sum(0, dtype=np.float64) / np.maximum(ok.sum(0), 1)).astype(_dtype())
    del first, finite, ok
    s1, s2, cnt, idx, xm, tail, fixes = np.zeros(d), np.zeros(d), np.zeros(d, np.int64), [], [], None, {}
    x64 = bool(jax.config.jax_enable_x64)  # a thread-local setting: the workers get the caller's

    def job(lo):
        with jax.enable_x64(x64):
            return _scan_chunk(x, src, ivar, mask, lo, chunk, shift, copy, read)

    with _row_reader(x) as read, ThreadPoolExecutor(_SCAN_THREADS) as pool:
        jobs = pool.map(job, range(0, n, chunk))
        for i, (y1, y2, observed, entries, values, t, fixed) in enumerate(jobs):
            s1 += y1
            s2 += y2
            cnt += observed
            seen = min((i + 1) * chunk, n)
            if seen * d - cnt.sum() > _DENSE_FRACTION * n * d:
                pool.shutdown(cancel_futures=True)
                return None
            idx.append(entries)
            xm.append(values)
            tail = t if t is not None else tail
            if fixed is not None:
                fixes[i * chunk] = fixed
    if fixes:  # non-finite values first seen after the first chunk of a zero-copy input
        src = _aligned((n, d))
        for lo in range(0, n, chunk):
            src[lo : lo + chunk] = fixes.get(lo, x[lo : lo + chunk])
    idx, xm = _pad_missing(idx, xm, chunk, d)
    safe = np.maximum(cnt, 1)
    shift = np.asarray(shift, np.float64)
    if mean is None:
        mean = (shift + s1 / safe).astype(_dtype())
    sq = float(np.sum(np.where(cnt > 0, s2 - s1 * s1 / safe, 0.0)))
    return _Data(src, None, idx, xm, tail, np.asarray(mean), n, chunk, sq, int(cnt.sum()), 0.0)


def _pad_missing(entries, values, chunk, d):
    """Per chunk: the stars' order by missing count and per block ``(b, m_j)`` index and value arrays.

    Each chunk's stars are sorted by their number of missing entries (``perm``: sorted
    position -> row) and cut into ``_BLOCKS`` blocks; block ``j`` of every chunk is padded
    (with pixel ``d``, a zero row) to the same width ``m_j``, the largest count in that
    block over all chunks rounded up to 8.  One compiled shape, and the padded work
    follows the distribution of missing counts instead of its maximum.
    """
    nb = _BLOCKS if chunk % _BLOCKS == 0 else 1
    size = chunk // nb
    layout, width = [], np.zeros(nb, np.int64)
    for rows, *_ in entries:
        counts = np.bincount(rows, minlength=chunk)
        perm = np.argsort(counts, kind="stable")
        width = np.maximum(width, counts[perm].reshape(nb, size).max(axis=1))
        inv = np.empty(chunk, np.int64)
        inv[perm] = np.arange(chunk)
        layout.append((perm.astype(np.int32), inv[rows]))
    width = 8 * np.maximum(1, -(-width // 8))
    out_i, out_v = [], []
    for (perm, place), (_, pos, cols, _), vals in zip(layout, entries, values, strict=True):
        block, local = np.divmod(place, size)
        ic = [np.full((size, int(m)), d, np.int32) for m in width]
        vc = [np.zeros((size, int(m)), _dtype()) for m in width]
        for j in range(nb):
            sel = block == j
            ic[j][local[sel], pos[sel]] = cols[sel]
            vc[j][local[sel], pos[sel]] = vals[sel]
        out_i.append((perm, *ic))
        out_v.append(tuple(vc))
    return out_i, out_v


def _prepare_dense(x, ivar, mask, mean, scale, chunk) -> _Data:
    """Copy ``w * (x - mean)`` (0 where missing) and ``w`` into aligned, zero-padded arrays."""
    n, d = x.shape
    n_pad = -(-n // chunk) * chunk
    y, w = _aligned((n_pad, d), 0.0), _aligned((n_pad, d), 0.0)
    sq, n_obs, sum_log_w = 0.0, 0, 0.0
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        xc, miss, ivc = _missing(x, ivar, mask, lo, hi)
        resid = np.where(miss, 0.0, xc - mean).astype(_dtype())
        wc = np.where(miss, 0.0, ivc / scale if scale is not None else 1.0).astype(_dtype())
        sq += float(np.sum(wc * resid * resid, dtype=np.float64))
        sum_log_w += float(np.sum(np.log(wc[wc > 0]), dtype=np.float64))
        y[lo:hi], w[lo:hi] = resid * wc, wc
        n_obs += int(miss.size - miss.sum())
    return _Data(y, w, [], [], None, np.asarray(mean), n, chunk, sq, n_obs, sum_log_w)


def _chunks(prep: _Data, stride: int = 1):
    """``(x, extra, valid)`` per chunk (every ``stride``-th); aligned numpy slices go to JAX without a copy."""
    c = prep.chunk
    for i, lo in enumerate(range(0, prep.n, c)):
        if i % stride:
            continue
        valid = jnp.asarray(np.arange(lo, lo + c) < prep.n, _dtype())
        if prep.w is not None:
            yield jax.device_put(prep.src[lo : lo + c]), (jax.device_put(prep.w[lo : lo + c]),), valid
        else:
            xc = prep.src[lo : lo + c] if lo + c <= prep.n else prep.tail
            perm, *idx = (jnp.asarray(a) for a in prep.idx[i])
            yield jax.device_put(xc), (perm, tuple(idx), tuple(jnp.asarray(a) for a in prep.xm[i])), valid
