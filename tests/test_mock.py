"""The built-in mock generator: determinism, shapes, planted physics, noise, clusters, domains, XP."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxspec.data import _linelist, mock
from jaxspec.data._grids import apogee_wavelength, chip_indices
from jaxspec.data.containers import default_float
from tests.conftest import assert_allclose

NAMES = mock.LABEL_NAMES
WAVE = apogee_wavelength(7514)
REF = np.array([4500.0, 2.5, 0.0] + [0.0] * 9, np.float32)  # a solar-scaled K giant


def _centres(mask: np.ndarray) -> np.ndarray:
    """Grid pixels at the centres of the selected lines (those not in a chip gap or off the grid)."""
    x = np.round(_linelist.pixel_position(mock.line_list().wavelength[mask])).astype(int)
    full = chip_indices(7514)
    pos = np.minimum(np.searchsorted(full, x), full.size - 1)
    return pos[full[pos] == x]


def _flux(labels=REF, **kwargs) -> np.ndarray:
    return np.asarray(mock.spectrum(labels, **kwargs), np.float64)


def _with(name: str, delta: float) -> np.ndarray:
    lab = REF.copy()
    lab[NAMES.index(name)] += delta
    return lab


@pytest.fixture(scope="module")
def clean_survey() -> mock.MockSurvey:
    """Fixed SNR 100, no sky, no dead pixels; with the noise-free model."""
    noise = mock.Noise(snr=100.0, bad_pixel_frac=0.0, sky=0.0, missing_label_frac=0.0)
    return mock.survey(jax.random.key(7), 16, noise=noise, keep_model=True, progress=False)


# -- the line list -------------------------------------------------------------------------
def test_line_list_is_fixed_and_tied_to_elements():
    ll = mock.line_list()
    # pinned: the list must be the same in every session and library version
    np.testing.assert_allclose(ll.wavelength[[0, 245, 490]], [15144.566431558975, 16040.58710408252, 16961.78297445974])
    np.testing.assert_allclose(_linelist.uniform(1, 3), [0.27357846347706083, 0.9062424483978249, 0.6012833071187135])
    assert 400 <= ll.wavelength.size <= 600
    assert np.all(np.diff(ll.wavelength) >= 0)
    for el in _linelist.ELEMENTS:
        assert (ll.element == el).sum() >= 5, el
    cn = ll.species == "CN"
    assert np.all(ll.abundance_weights[cn][:, [1, 2]] == 1.0)  # CN needs both C and N
    assert np.all(ll.teff_sensitivity[cn] > 0) and np.all(ll.teff_sensitivity[ll.species == "H I"] < 0)


# -- one star: planted physics -------------------------------------------------------------
def test_spectrum_is_continuum_normalised():
    f = _flux()
    assert f.shape == (7514,) and np.all(f > 0) and np.all(f <= 1.0)
    assert np.median(f) > 0.99 and f.max() > 0.9999 and f.min() < 0.6


def test_spectrum_first_traced_inside_jit_is_pure():
    """The line tables of a new grid length, first built inside a jit trace, are concrete (cached) arrays."""
    from jaxspec.data._mock_star import _arrays

    n_pix = 7214  # its tables, dropped from the cache, are built again inside the trace below
    _arrays.cache_clear()
    jac = jax.jit(jax.jacfwd(lambda y: mock.spectrum(y, n_pix=n_pix)))(REF)
    again = jax.jit(jax.jacfwd(lambda y: mock.spectrum(y, n_pix=n_pix) ** 2))(REF)  # a second trace, same tables
    flux = np.asarray(mock.spectrum(REF, n_pix=n_pix))
    assert jac.shape == (n_pix, 12)
    assert_allclose(again, 2 * flux[:, None] * np.asarray(jac), scale=10)


@pytest.mark.parametrize("name", NAMES[3:])
def test_abundance_deepens_its_own_lines_only(name):
    ll = mock.line_list()
    col = _linelist.ELEMENTS.index(name.split("_")[0])
    diff = _flux(_with(name, 0.2)) - _flux()
    own = _centres(ll.element == name.split("_")[0])
    assert diff[own].mean() < -0.005
    # lines that do not depend on this element, far from any that do, do not move at all
    touched = _linelist.pixel_position(ll.wavelength[ll.abundance_weights[:, col] != 0])
    far = np.abs(_linelist.pixel_position(WAVE)[:, None] - touched[None, :]).min(axis=1) > _linelist.WING_RADIUS + 2
    others = np.intersect1d(_centres(ll.abundance_weights[:, col] == 0), np.flatnonzero(far))
    assert others.size > 50
    np.testing.assert_allclose(diff[others], 0.0, atol=1e-6)


def test_carbon_weakens_oh_and_iron_scales_every_metal():
    ll = mock.line_list()
    oh = _centres(ll.species == "OH")
    assert (_flux(_with("C_FE", 0.3)) - _flux())[oh].mean() > 0.002  # C locks O into CO
    diff = _flux(_with("FE_H", 0.2)) - _flux()
    for species in ("Fe I", "Mg I", "Si I", "CN"):  # [X/H] = [X/Fe] + [Fe/H]
        assert diff[_centres(ll.species == species)].mean() < -0.005, species


def test_hotter_stars_have_weaker_molecules_and_stronger_hydrogen():
    ll = mock.line_list()
    cool, hot = 1.0 - _flux(_with("TEFF", -500.0)), 1.0 - _flux(_with("TEFF", 500.0))
    for species in ("CO", "OH", "CN"):
        px = _centres(ll.species == species)
        assert hot[px].mean() < 0.5 * cool[px].mean(), species
    px = _centres(ll.species == "H I")
    assert hot[px].mean() > 2 * cool[px].mean()


def test_surface_gravity_grows_damping_wings():
    ll = mock.line_list()
    x = _linelist.pixel_position(ll.wavelength)
    gap = np.sort(np.abs(x[:, None] - x[None, :]), axis=1)[:, 1]
    line = np.flatnonzero((ll.species == "Mg I") & (gap > 15))[0]
    keep = np.zeros(ll.wavelength.size, np.float32)
    keep[line] = 1.0  # this line alone
    centre = _centres(np.arange(ll.wavelength.size) == line)[0]
    wing_to_core = []
    for logg in (1.0, 3.5):
        depth = 1.0 - _flux(_with("LOGG", logg - 2.5), keep=keep)
        wing_to_core.append(depth[centre + 6 : centre + 12].mean() / depth[centre])
    assert wing_to_core[1] > 1.5 * wing_to_core[0]


def test_dib_depth_scales_with_extinction_and_moves_with_rv():
    px = np.log10(1 + 100.0 / 299792.458) / 6e-6  # 100 km/s in pixels
    ratio = {(a, v): _flux(a_k=a, rv=v) / _flux() for a in (0.25, 0.5) for v in (0.0, 100.0)}
    depth = {k: 1 - r.min() for k, r in ratio.items()}
    assert 0.01 < depth[0.25, 0.0] < 0.1
    assert_allclose(depth[0.5, 0.0] / depth[0.25, 0.0], 2.0, rtol=0.05)
    dib = np.argmin(np.abs(WAVE - 15272.4 * _linelist.AIR_TO_VAC))
    assert abs(ratio[0.5, 0.0].argmin() - dib) <= 1
    assert abs(ratio[0.5, 100.0].argmin() - (dib - px)) <= 1.5  # the ISM is blue-shifted in the star's frame


def test_spectrum_validates_input():
    with pytest.raises(ValueError, match="labels"):
        mock.spectrum(np.ones(3))
    with pytest.raises(ValueError, match="n_pix"):
        mock.spectrum(REF, n_pix=8000)
    with pytest.raises(ValueError, match="keep"):
        mock.spectrum(REF, keep=np.ones(3))


# -- surveys ---------------------------------------------------------------------------------
def test_survey_is_deterministic_and_independent_of_chunking():
    a = mock.survey(jax.random.key(3), 5, progress=False)
    b = mock.survey(jax.random.key(3), 5, chunk_size=2)  # with a progress bar
    c = mock.survey(jax.random.key(4), 5, progress=False)
    for x, y in (
        (a.spectra.flux, b.spectra.flux),
        (a.spectra.ivar, b.spectra.ivar),
        (a.labels.values, b.labels.values),
    ):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.rv, b.rv)
    assert not np.array_equal(a.spectra.flux, c.spectra.flux)
    assert not np.array_equal(a.true_labels.values, c.true_labels.values)


def test_survey_shapes_grid_and_dtypes(clean_survey):
    s = clean_survey
    assert s.spectra.flux.shape == s.spectra.ivar.shape == s.model_flux.shape == (16, 7514)
    np.testing.assert_array_equal(s.spectra.wavelength, WAVE)
    assert s.labels.names == s.true_labels.names == NAMES
    assert s.spectra.flux.dtype == s.labels.values.dtype == default_float()
    for a in (s.snr, s.rv, s.a_k, s.vbroad):
        assert a.shape == (16,) and np.all(np.isfinite(a))
    assert np.all(s.a_k >= 0) and np.all(np.abs(s.rv) <= 240)
    t = mock.survey(jax.random.key(0), 3, n_pix=7214, progress=False)
    np.testing.assert_array_equal(t.spectra.wavelength, apogee_wavelength(7214))
    assert mock.survey(jax.random.key(0), 3, progress=False).model_flux is None


def test_survey_model_is_the_one_star_spectrum(clean_survey):
    s = clean_survey
    one = jax.jit(jax.vmap(lambda lab, v, a, r: mock.spectrum(lab, vbroad=v, a_k=a, rv=r)))
    expected = one(s.true_labels.values.astype(np.float32), *(np.float32(x) for x in (s.vbroad, s.a_k, s.rv)))
    assert_allclose(s.model_flux, expected, dtype=np.float32)
    assert np.all(s.model_flux <= 1.0) and np.all(np.median(s.model_flux, axis=1) > 0.98)


def test_noise_matches_the_snr(clean_survey):
    s = clean_survey
    assert np.all(s.spectra.ivar > 0)
    chi = (s.spectra.flux - s.model_flux) * np.sqrt(s.spectra.ivar)
    assert abs(chi.mean()) < 0.01 and abs(chi.std() - 1.0) < 0.01
    assert abs(np.corrcoef(chi[:, :-1].ravel(), chi[:, 1:].ravel())[0, 1]) < 0.02  # white
    assert abs(np.corrcoef(chi[:-1].ravel(), chi[1:].ravel())[0, 1]) < 0.02  # independent stars
    np.testing.assert_allclose(s.snr, 100.0, rtol=1e-6)
    assert 90 < np.median(s.spectra.snr()) < 110
    # the SNR range is log-uniform
    snr = mock.survey(jax.random.key(1), 64, noise=mock.Noise(snr=(30.0, 300.0)), progress=False).snr
    assert snr.min() >= 30 and snr.max() <= 300 and 0.3 < np.mean(snr < np.sqrt(30 * 300)) < 0.7


def test_dead_pixels_and_sky_lines():
    noise = mock.Noise(snr=100.0, bad_pixel_frac=0.02, sky=1.0)
    s = mock.survey(jax.random.key(5), 16, noise=noise, progress=False)
    assert 0.016 < s.spectra.mask.mean() < 0.022
    assert np.all(np.isfinite(s.spectra.flux))
    no_sky = mock.survey(jax.random.key(5), 16, noise=noise._replace(sky=0.0), progress=False)
    ok = s.spectra.mask == no_sky.spectra.mask
    assert ok.all()  # same key, same dead pixels
    ratio = np.log(np.where(ok & ~s.spectra.mask, no_sky.spectra.ivar / np.maximum(s.spectra.ivar, 1e-30), 1.0))
    inflated = ratio > np.log(4.0)  # errors more than doubled
    assert np.all(inflated.sum(axis=1) > 10) and inflated.mean() < 0.05
    # the sky lines sit at the same wavelengths in every star
    assert np.corrcoef(ratio)[np.triu_indices(16, 1)].min() > 0.8


def test_labels_have_errors_and_missing_entries():
    noise = mock.Noise(snr=100.0, missing_label_frac=0.2)
    s = mock.survey(jax.random.key(2), 256, noise=noise, progress=False)
    assert 0.17 < np.mean(~s.labels.observed) < 0.23
    assert np.all(s.true_labels.observed)
    assert_allclose(s.labels.err[s.labels.observed[:, 0], 0], mock.LABEL_ERRORS[0])
    pull = (s.labels.as_nan() - s.true_labels.values) / s.true_labels.err
    assert abs(np.nanstd(pull) - 1.0) < 0.05 and abs(np.nanmean(pull)) < 0.05


def test_population_is_a_giant_branch_with_two_alpha_sequences():
    t = mock.survey(jax.random.key(9), 512, progress=False).true_labels
    teff, logg, feh, mg = (t.values[:, NAMES.index(n)] for n in ("TEFF", "LOGG", "FE_H", "MG_FE"))
    assert teff.min() >= 3500 and teff.max() <= 5500 and logg.min() > 0.3 and logg.max() < 3.9
    assert np.corrcoef(teff, logg)[0, 1] > 0.7
    mid = (feh > -0.8) & (feh < -0.2)
    assert np.mean(mg[mid] > 0.2) > 0.1 and np.mean(mg[mid] < 0.12) > 0.1
    assert np.corrcoef(mg, t.values[:, NAMES.index("O_FE")])[0, 1] > 0.7
    dwarfs = mock.survey(jax.random.key(9), 64, dwarf_frac=1.0, progress=False).true_labels.values
    assert dwarfs[:, 1].min() > 3.9 and dwarfs[:, 0].max() > 5500


def test_survey_validates_input():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="n_stars"):
        mock.survey(key, 0)
    with pytest.raises(ValueError, match="n_pix"):
        mock.survey(key, 2, n_pix=8000)
    with pytest.raises(ValueError, match=r"noise\.snr"):
        mock.survey(key, 2, noise=mock.Noise(snr=(300.0, 30.0)))
    with pytest.raises(ValueError, match=r"noise\.bad_pixel_frac"):
        mock.survey(key, 2, noise=mock.Noise(bad_pixel_frac=0.6))
    with pytest.raises(TypeError, match="noise"):
        mock.survey(key, 2, noise={"snr": 100})
    with pytest.raises(ValueError, match="dwarf_frac"):
        mock.survey(key, 2, dwarf_frac=2.0)


def test_chunks_compile_once():
    mock.survey(jax.random.key(0), 5, progress=False)
    size = mock._chunk._cache_size()
    mock.survey(jax.random.key(1), 9, noise=mock.Noise(snr=50.0, bad_pixel_frac=0.005), progress=False)
    assert mock._chunk._cache_size() == size


# -- open clusters ---------------------------------------------------------------------------
def test_open_clusters_share_abundances_not_teff_logg():
    c = mock.open_clusters(jax.random.key(0), 3, [4, 5, 6], 10, abundance_spread=0.0, progress=False)
    np.testing.assert_array_equal(c.cluster_id, [0] * 4 + [1] * 5 + [2] * 6 + [-1] * 10)
    assert c.spectra.n_stars == c.labels.n_stars == 25
    v = c.true_labels.values
    for k in range(3):
        m = c.cluster_id == k
        np.testing.assert_array_equal(v[m, 2:], np.broadcast_to(v[m][0, 2:], v[m, 2:].shape))
        assert v[m, 0].std() > 30 and v[m, 1].std() > 0.05
        assert c.rv[m].std() < 3 and np.ptp(c.a_k[m]) < 0.15
    assert np.ptp(v[c.cluster_id >= 0][:, NAMES.index("FE_H")]) > 0.02  # clusters differ
    spread = mock.open_clusters(jax.random.key(0), 2, 40, 0, abundance_spread=0.02, progress=False)
    within = [spread.true_labels.values[spread.cluster_id == k, 2:].std(axis=0) for k in range(2)]
    assert 0.01 < np.mean(within) < 0.03
    with pytest.raises(ValueError, match="n_members"):
        mock.open_clusters(jax.random.key(0), 3, [1, 2])


# -- two domains -----------------------------------------------------------------------------
def test_domains_drop_lines_from_the_synthetic_side_only():
    ll = mock.line_list()
    d = mock.domains(jax.random.key(0), 8, drop=("MG",), progress=False)
    np.testing.assert_array_equal(d.dropped_lines, np.flatnonzero(ll.element == "MG"))
    mg = _centres(ll.element == "MG")
    assert d.dropped_mask[mg].all() and d.dropped_mask.mean() < 0.2
    syn, obs = d.synthetic.flux, d.observed.flux
    x = _linelist.pixel_position(ll.wavelength)
    gap = np.sort(np.abs(x[:, None] - x[None, :]), axis=1)[:, 1]
    alone = _centres((ll.element == "MG") & (gap > 6))
    assert alone.size >= 3 and np.all(syn[:, alone] > 0.98)  # gone from the synthetic spectra...
    assert ((syn - obs)[:, mg].mean(axis=0) > 0.03).mean() > 0.7  # ...still there in the observed ones
    assert np.all(d.synthetic.ivar == np.float32(mock.SYNTHETIC_ERR**-2))
    fe = np.setdiff1d(_centres(ll.species == "Fe I"), np.flatnonzero(d.dropped_mask))
    assert (1 - syn[:, fe]).mean() > 0.02  # other lines stay
    # paired: the observed labels are noisy versions of the synthetic stars' labels
    pull = (d.observed_labels.as_nan() - d.labels.values) / d.observed_labels.err
    assert np.nanmax(np.abs(pull)) < 6


def test_domains_drop_choices_and_pairing():
    key = jax.random.key(1)
    a = mock.domains(key, 3, paired=False, drop=0.3, progress=False)
    b = mock.domains(key, 3, paired=False, drop=0.3, progress=False)
    np.testing.assert_array_equal(a.dropped_lines, b.dropped_lines)
    np.testing.assert_array_equal(a.observed.flux, b.observed.flux)
    assert 20 < a.dropped_lines.size < 120
    assert not np.allclose(a.observed_labels.as_nan(), a.labels.values, equal_nan=True)
    assert mock.domains(key, 2, drop=[3, 5], progress=False).dropped_lines.tolist() == [3, 5]
    assert mock.domains(key, 2, drop=None, progress=False).dropped_lines.size == 0
    for bad in ("XX", [10_000], 2.0, 7):
        with pytest.raises(ValueError, match="drop"):
            mock.domains(key, 2, drop=bad, progress=False)


# -- Gaia XP ---------------------------------------------------------------------------------
def test_gaia_xp_coefficients_scale_with_g_flux_and_colour():
    xp = mock.gaia_xp(jax.random.key(2), 400, labelled_frac=0.4, outlier_frac=0.05)
    assert xp.coefficients.shape == xp.errors.shape == (400, 110)
    assert np.all(xp.errors > 0) and np.all(xp.phot_g_mean_flux > 0)
    again = mock.gaia_xp(jax.random.key(2), 400, labelled_frac=0.4, outlier_frac=0.05)
    np.testing.assert_array_equal(xp.coefficients, again.coefficients)
    assert not np.array_equal(xp.coefficients, mock.gaia_xp(jax.random.key(1), 400).coefficients)
    total = (xp.coefficients[:, 0] + xp.coefficients[:, 55]) / xp.phot_g_mean_flux
    assert np.ptp(np.log10(xp.phot_g_mean_flux)) > 2.5 and np.ptp(np.log10(total)) < 0.5  # un-normalised
    teff, feh = xp.true_labels.values[:, 0], xp.true_labels.values[:, 2]
    colour = np.log(xp.coefficients[:, 0] / xp.coefficients[:, 55])  # BP / RP
    low = xp.a_k < 0.1
    assert np.corrcoef(colour[low], teff[low])[0, 1] > 0.8  # hotter is bluer
    design = np.stack([np.ones_like(teff), teff, feh, xp.a_k], axis=1)
    assert np.linalg.lstsq(design, colour, rcond=None)[0][3] < -2  # extinction reddens
    labelled = xp.labels.observed.all(axis=1)
    assert np.all(labelled == xp.labels.observed.any(axis=1))  # all three labels or none
    assert 0.33 < labelled.mean() < 0.47 and 0.01 < xp.is_outlier.mean() < 0.1
    assert np.all(xp.true_labels.values[xp.is_outlier, 2] < -1.0)
    s = xp.to_spectra()
    assert s.wavelength is None
    assert_allclose(s.ivar, 1.0 / xp.errors**2, rtol=1e-6)
    with pytest.raises(ValueError, match="labelled_frac"):
        mock.gaia_xp(jax.random.key(0), 3, labelled_frac=2.0)


def test_domains_abundance_scatter_is_independent_and_leaves_the_rest():
    key = jax.random.key(2)
    base = mock.domains(key, 64, paired=False, drop=None, progress=False)
    wide = mock.domains(key, 64, paired=False, drop=None, abundance_scatter=0.1, progress=False)
    np.testing.assert_array_equal(wide.labels.values[:, :3], base.labels.values[:, :3])  # Teff, logg, [Fe/H]
    extra = wide.labels.values[:, 3:] - base.labels.values[:, 3:]
    assert 0.09 < extra.std() < 0.11 and abs(extra.mean()) < 0.01
    corr = np.corrcoef(extra.T)[np.triu_indices(extra.shape[1], 1)]
    assert np.abs(corr).max() < 0.45  # nine independent draws, 64 stars each
    assert not np.allclose(wide.synthetic.flux, base.synthetic.flux)  # the spectra follow the labels
    for bad in (-0.1, np.inf, "0.1"):
        with pytest.raises(ValueError, match="abundance_scatter"):
            mock.domains(key, 2, abundance_scatter=bad, progress=False)
