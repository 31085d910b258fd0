"""Cycle-StarNet: the paper's shapes, every loss term by hand, group isolation, compile once, fit, save/load."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspec import Spectra, io
from jaxspec.models import cycle_starnet as cs
from jaxspec.models.cycle_starnet._networks import (
    critic_obs,
    critic_synth,
    decode_obs,
    decode_synth,
    encode_obs,
    encode_synth,
    graphdefs,
)
from jaxspec.optim.train import Group, Unpaired, init_groups, make_multi_step
from tests._multidevice import run_in_subprocess
from tests.conftest import assert_allclose

N_TINY = 63  # a length the tiny networks take: 63 -> 31 -> 15 -> 7


def tiny(**changes) -> cs.Config:
    base = {
        "kernel": 3, "domain_filters": (4,), "domain_strides": (2,), "shared_filters": (8, 8),
        "shared_strides": (2, 2), "shared_z": 3, "split_filters": (4, 4), "split_strides": (2, 2), "split_z": 2,
        "critic_filters": (4, 4), "critic_stride": 2, "critic_latent_filters": (4,), "iterations": 20,
        "batch_size": 4, "crop": (1, 0),
    }  # fmt: skip
    return cs.Config(**{**base, **changes})


def domains(n_obs=40, n_syn=36, seed=0):
    """Unpaired toy domains on N_TINY + 1 pixels: synthetic absorption lines, observed ones broader and noisy."""
    rng = np.random.default_rng(seed)
    pix = np.arange(N_TINY + 1)

    def spectra(n, width):
        depth = rng.uniform(0.1, 0.5, (n, 1))
        centre = rng.uniform(10, 50, (n, 1))
        return 1.0 - depth * np.exp(-0.5 * ((pix - centre) / width) ** 2)

    obs = spectra(n_obs, 2.5) + 0.01 * rng.normal(size=(n_obs, pix.size))
    wave = 15200.0 + 0.2 * pix
    observed = Spectra(obs, err=np.full(obs.shape, 0.01), wavelength=wave)
    return observed, Spectra(spectra(n_syn, 1.5), err=np.full((n_syn, pix.size), 0.005), wavelength=wave)


@pytest.fixture(scope="module")
def trained():
    observed, synthetic = domains()
    return cs.fit(observed, synthetic, key=jax.random.key(0), config=tiny(), progress=False)


def test_paper_shapes_round_trip_7167_pixels_and_parameter_counts():
    config = cs.Config()
    assert cs.network_lengths(config, 7167) == {"intermediate": 447, "latent": 24, "critic": 6}
    shapes = cs.param_shapes(config, 7167)
    gd = graphdefs(config, 7167, np.float32)
    x = jax.ShapeDtypeStruct((7167,), np.float32)
    z_sh, z_sp = jax.eval_shape(lambda p, x: encode_obs(gd, p.generator, x), shapes, x)
    assert z_sh.shape == (24, 25) and z_sp.shape == (24, 4)  # the paper's 25 x 24 and 4 x 24, channels last
    assert jax.eval_shape(lambda p, x: encode_synth(gd, p.generator, x), shapes, x).shape == (24, 25)
    for direction in cs.DIRECTIONS:
        out = jax.eval_shape(lambda p, x, z, d=direction: cs.transfer_one(gd, p, x, d, z), shapes, x, z_sp)
        assert out.shape == (7167,), direction

    def conv(k, c_in, c_out):
        return k * c_in * c_out + c_out

    size = lambda tree: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))  # noqa: E731
    counts = {k: size(v) for k, v in shapes.generator._asdict().items()}
    counts.update({f"c_{k}": size(v) for k, v in shapes.critic._asdict().items()})
    expected = {
        "e_synth": conv(7, 1, 32) + conv(7, 32, 64),
        "e_sh": conv(7, 64, 128) + conv(7, 128, 256) + conv(7, 256, 512) + conv(1, 512, 25),
        "e_sp": conv(7, 64, 32) + 2 * conv(7, 32, 32) + conv(1, 32, 4),
        "d_sh": conv(7, 25, 512) + conv(7, 512, 256) + conv(7, 256, 128),
        "d_sp": conv(7, 4, 32) + 2 * conv(7, 32, 32),
        "d_synth": conv(7, 128, 64) + conv(7, 64, 32) + conv(1, 32, 1),
        "d_obs": conv(7, 160, 64) + conv(7, 64, 32) + conv(1, 32, 1),
        "c_synth": conv(7, 1, 16) + conv(7, 16, 32) + conv(7, 32, 64) + conv(7, 64, 128) + conv(7, 128, 256)
        + conv(1, 25, 32) + conv(1, 32, 64) + conv(1, 64, 128) + conv(1, 128, 256) + conv(1, 256, 512)
        + 6 * 256 + 24 * 512 + 1,
    }  # fmt: skip
    expected["e_obs"] = expected["e_synth"]
    expected["c_obs"] = expected["c_synth"] + 4 * 32
    assert counts == expected
    print("parameters per sub-network (paper's configuration):", counts)


@pytest.mark.parametrize(("n", "c_in", "c_out", "stride"), [(24, 25, 16, 2), (11, 8, 4, 4), (5, 3, 2, 1)])
def test_transposed_convolution_equals_flax(n, c_in, c_out, stride):
    from flax import nnx

    from jaxspec.models.cycle_starnet._networks import _ConvTranspose

    ours = _ConvTranspose(c_in, c_out, 7, stride, dtype="float32", rngs=nnx.Rngs(0))
    flax = nnx.ConvTranspose(c_in, c_out, kernel_size=(7,), strides=(stride,), padding="VALID", rngs=nnx.Rngs(1))
    flax.kernel[...] = ours.kernel[...]
    flax.bias[...] = ours.bias[...]
    x = jnp.asarray(np.random.default_rng(2).normal(size=(n, c_in)), jnp.float32)
    assert ours(x).shape == ((n - 1) * stride + 7, c_out)
    assert_allclose(ours(x), flax(x), atol=1e-5)
    assert_allclose(ours.bias[...], np.full(c_out, 0.01))


def test_instance_norm_and_network_lengths():
    z = jnp.asarray(np.random.default_rng(1).normal(3.0, 2.0, (24, 5)), jnp.float32)
    out = cs.instance_norm(z)
    assert_allclose(jnp.mean(out, axis=0), np.zeros(5), atol=1e-6)
    assert_allclose(jnp.mean(out**2, axis=0), np.ones(5) * np.var(z, axis=0) / (np.var(z, axis=0) + 1e-5), rtol=1e-5)
    assert cs.network_lengths(cs.Config(), 7168) is None
    assert cs.valid_lengths(tiny(), 70) == [15, 23, 31, 39, 47, 55, 63]


def _batch(config, seed=0, b=3):
    rng = np.random.default_rng(seed)
    d = lambda: cs.Domain(  # noqa: E731
        jnp.asarray(rng.normal(size=(b, N_TINY)), jnp.float32),
        jnp.asarray(rng.uniform(0.0, 2.0, (b, N_TINY)) * (rng.random((b, N_TINY)) > 0.2), jnp.float32),
    )
    return Unpaired(d(), d())


def test_every_loss_term_equals_a_hand_computation():
    config = tiny(weight_synth=2.0, weight_obs=5.0, weight_adv=0.7, weight_critic=1.3)
    params = cs.init_params(jax.random.key(3), config, N_TINY)
    batch = _batch(config)
    gd = graphdefs(config, N_TINY, np.float32)
    gen, crit = params.generator, params.critic
    obs, syn = batch.first, batch.second
    d = lambda a, b, w: np.mean((np.asarray(w, np.float64) * (np.asarray(a, np.float64) - np.asarray(b))) ** 2)  # noqa: E731
    bce1 = lambda a: np.mean(-np.log(1.0 / (1.0 + np.exp(-np.asarray(a, np.float64)))))  # noqa: E731
    bce0 = lambda a: np.mean(-np.log(1.0 - 1.0 / (1.0 + np.exp(-np.asarray(a, np.float64)))))  # noqa: E731

    @jax.jit
    def star(xs, xo):  # one synthetic and one observed star, every spectrum and logit of the paper's losses
        zs = encode_synth(gd, gen, xs)
        zo, so = encode_obs(gd, gen, xo)
        x_so = decode_obs(gd, gen, zs, so)  # synthetic star i borrows observed star i's split latent
        x_os = decode_synth(gd, gen, zo)
        z_so, s_so = encode_obs(gd, gen, x_so)
        x_ss, x_oo = decode_synth(gd, gen, zs), decode_obs(gd, gen, zo, so)
        return {
            "x_ss": x_ss, "x_oo": x_oo, "x_sos": decode_synth(gd, gen, z_so),
            "x_oso": decode_obs(gd, gen, encode_synth(gd, gen, x_os), so),
            "fs": critic_synth(gd, crit, x_os, zo), "fo": critic_obs(gd, crit, x_so, zs, s_so),
            "rs": critic_synth(gd, crit, x_ss, zs), "ro": critic_obs(gd, crit, x_oo, zo, so),
        }  # fmt: skip

    rows = [star(syn.x[i], obs.x[i]) for i in range(obs.x.shape[0])]
    r = {k: np.stack([np.asarray(row[k]) for row in rows]) for k in rows[0]}
    hand = {
        "rec_synth": d(r["x_ss"], syn.x, syn.w),
        "cycle_synth": d(r["x_sos"], syn.x, syn.w),
        "rec_obs": d(r["x_oo"], obs.x, obs.w),
        "cycle_obs": d(r["x_oso"], obs.x, obs.w),
        "adv_synth": bce1(r["fs"]),
        "adv_obs": bce1(r["fo"]),
    }
    total = 2.0 * (hand["rec_synth"] + hand["cycle_synth"]) + 5.0 * (hand["rec_obs"] + hand["cycle_obs"])
    total += 0.7 * (hand["adv_synth"] + hand["adv_obs"])
    loss, (terms, handoff) = cs.generator_loss(config)(params, batch, jax.random.key(0))
    for k, v in hand.items():
        assert_allclose(terms[k], v, rtol=2e-5, err_msg=k)
    assert_allclose(loss, total, rtol=2e-5)
    critic_hand = {
        "real_synth": bce1(r["rs"]), "fake_synth": bce0(r["fs"]), "real_obs": bce1(r["ro"]), "fake_obs": bce0(r["fo"])
    }  # fmt: skip
    closs, cterms = cs.critic_loss(config)(params, batch, jax.random.key(0), handoff)
    for k, v in critic_hand.items():
        assert_allclose(cterms[k], v, rtol=2e-5, err_msg=k)
    assert_allclose(closs, 1.3 * sum(critic_hand.values()), rtol=2e-5)
    vloss, _ = cs.validation_loss(config)(params, batch, jax.random.key(0))
    assert_allclose(vloss, total - 0.7 * (hand["adv_synth"] + hand["adv_obs"]), rtol=2e-5)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree.leaves(tree)])


def test_generator_step_leaves_the_critics_and_the_critic_step_the_generator():
    config = tiny()
    params = cs.init_params(jax.random.key(4), config, N_TINY)
    batch = _batch(config, seed=1)
    g_loss, c_loss = cs.generator_loss(config), cs.critic_loss(config)
    lr = 0.05
    frozen = lambda name, opt: Group(name, g_loss if name == "generator" else c_loss, opt, has_aux=True,  # noqa: E731
                                     passes=name == "generator")  # fmt: skip
    only_gen = [frozen("generator", optax.sgd(lr)), frozen("critic", optax.sgd(0.0))]
    new_g, _, _ = make_multi_step(only_gen)(params, init_groups(only_gen, params), batch, jax.random.key(0))
    np.testing.assert_array_equal(_flat(new_g.critic), _flat(params.critic))  # the generator's step: critics kept
    assert not np.allclose(_flat(new_g.generator), _flat(params.generator))
    # the critic's update is the gradient of its loss on the generator's outputs before the generator's update
    (_, (_, handoff)) = jax.jit(g_loss)(params, batch, jax.random.key(0))
    grad = jax.jit(jax.grad(lambda c: c_loss(params._replace(critic=c), batch, jax.random.key(1), handoff)[0]))(
        params.critic
    )
    both = list(cs.groups(config))
    both = [both[0]._replace(optimizer=optax.sgd(lr)), both[1]._replace(optimizer=optax.sgd(lr))]
    new, _, metrics = make_multi_step(both)(params, init_groups(both, params), batch, jax.random.key(0))
    expected = jax.tree.map(lambda p, g: p - lr * g, params.critic, grad)
    assert_allclose(_flat(new.critic), _flat(expected), atol=1e-6)
    # the critic's step leaves the generator where the generator's step put it
    np.testing.assert_array_equal(_flat(new.generator), _flat(new_g.generator))
    assert set(metrics) >= {"generator/rec_obs", "generator/adv_synth", "critic/real_obs", "critic/fake_synth"}


def test_step_compiles_once_and_fit_history(trained):
    from jaxspec.optim._loop import _keyed

    assert _keyed(cs.make_step(tiny()))._cache_size() == 1  # every pass and iteration of the fit: one compilation
    assert cs.make_step(tiny(iterations=7, batch_size=2)) is cs.make_step(tiny())  # the run's sizes: the same step
    h = trained.history
    for k in ("generator/loss", "generator/rec_synth", "generator/cycle_obs", "generator/adv_obs", "critic/loss",
              "critic/fake_obs", "val_loss"):  # fmt: skip
        assert k in h and np.all(np.isfinite(h[k])), k
    assert trained.aux["iterations"] >= 20 and trained.aux["batch_size"] == 4
    assert len(h["generator/loss"]) == -(-20 // trained.aux["steps_per_pass"])
    assert trained.converged is False
    # training reduces the reconstruction distances from their start
    assert h["generator/rec_synth"][-1] < h["generator/rec_synth"][0]


def test_transfers_shapes_save_and_load(trained, tmp_path):
    model = trained.model
    observed, synthetic = domains(5, 5, seed=3)
    z = cs.encode(model, observed, progress=False)
    assert z.z_sh.shape == (5, 7, 3) and z.z_sp.shape == (5, 7, 2)
    assert cs.encode(model, synthetic, domain="synth", progress=False).z_sp is None
    outs = {}
    for d in cs.DIRECTIONS:
        source = observed if d.startswith("obs") else synthetic
        outs[d] = cs.transfer(model, source, d, z_sp=z.z_sp if d == "synth->obs" else None, progress=False)
        assert outs[d].shape == (5, N_TINY) and np.all(np.isfinite(outs[d])), d
    np.testing.assert_allclose(cs.reconstruct(model, observed, progress=False), outs["obs->obs"], rtol=1e-6)
    own = cs.transfer(model, observed, "obs->obs", z_sp=z.z_sp, progress=False)
    np.testing.assert_allclose(own, outs["obs->obs"], rtol=1e-5, atol=1e-6)
    # one split latent for every star broadcasts; a chunk smaller than the stars gives the same result
    one = cs.transfer(model, synthetic, "synth->obs", z_sp=z.z_sp[0], chunk_size=2, progress=False)
    np.testing.assert_allclose(one[0], outs["synth->obs"][0], rtol=1e-5, atol=1e-6)
    path = io.save(tmp_path / "cs.npz", model)
    back = io.load(path)
    assert isinstance(back, cs.Model) and back.config == model.config and back.n_pix == N_TINY + 1
    np.testing.assert_array_equal(cs.transfer(back, synthetic, "synth->obs", z_sp=z.z_sp, progress=False),
                                  outs["synth->obs"])  # fmt: skip


@pytest.mark.slow
def test_data_parallel_equals_one_device():
    # one combined step (SGD, so rounding is not amplified as by Adam's first sign-like steps) on one and on
    # two devices; fit passes its mesh to this same step (make_step)
    code = """
import optax
from tests.test_cycle_starnet import N_TINY, _batch, tiny
from jaxspec.models import cycle_starnet as cs
from jaxspec.optim.train import init_groups, make_multi_step
config = tiny()
params = cs.init_params(jax.random.key(6), config, N_TINY)
groups = [g._replace(optimizer=optax.sgd(1e-2)) for g in cs.groups(config)]
batch = _batch(config, seed=2, b=4)
one = make_multi_step(groups)(params, init_groups(groups, params), batch, jax.random.key(0))
two = make_multi_step(groups, mesh=mesh)(params, init_groups(groups, params), batch, jax.random.key(0))
out['n'] = np.asarray(mesh.devices.size)
out['one'] = np.concatenate([np.ravel(a) for a in jax.tree.leaves(one[0])])
out['two'] = np.concatenate([np.ravel(a) for a in jax.tree.leaves(two[0])])
out['loss_one'], out['loss_two'] = one[2]['loss'], two[2]['loss']
"""
    res = run_in_subprocess(code, devices=2)
    assert int(res["n"]) == 2
    assert_allclose(res["two"], res["one"], rtol=1e-5, atol=1e-6)
    assert_allclose(res["loss_two"], res["loss_one"], rtol=1e-5)


def test_bad_input(trained):
    observed, synthetic = domains(8, 8)
    key = jax.random.key(0)
    grid = lambda n: Spectra(np.ones((8, n)), ivar=np.ones((8, n)), wavelength=15200.0 + 0.2 * np.arange(n))  # noqa: E731
    with pytest.raises(ValueError, match="synthetic: expected 64 pixels"):
        cs.fit(observed, grid(60), key=key, config=tiny(), progress=False)
    with pytest.raises(ValueError, match="valid_lengths"):
        cs.fit(observed, synthetic, key=key, config=tiny(crop=(2, 0)), progress=False)
    with pytest.raises(TypeError, match="spectra: expected a Spectra"):
        cs.fit(np.ones((8, 64)), synthetic, key=key, config=tiny(), progress=False)
    empty = Spectra(np.ones((8, 64)), ivar=np.zeros((8, 64)), wavelength=observed.wavelength)
    with pytest.raises(ValueError, match="spectra: expected at least one star with a measured pixel"):
        cs.fit(empty, synthetic, key=key, config=tiny(), progress=False)
    with pytest.raises(ValueError, match="direction"):
        cs.transfer(trained.model, synthetic, "synth->sky", progress=False)
    with pytest.raises(ValueError, match="z_sp: expected finite split latents"):
        cs.transfer(trained.model, synthetic, "synth->obs", progress=False)
    with pytest.raises(ValueError, match="z_sp: the 'obs->synth' transfer takes no split latents"):
        cs.transfer(trained.model, observed, "obs->synth", z_sp=np.zeros((7, 2)), progress=False)
    with pytest.raises(ValueError, match="spectra: expected 64 pixels"):
        cs.encode(trained.model, grid(63), progress=False)
    with pytest.raises(ValueError, match="domain"):
        cs.encode(trained.model, observed, domain="model", progress=False)
    for bad, field in [({"split_strides": (2, 1)}, "config.split_strides"), ({"betas": (0.5,)}, "config.betas"),
                       ({"decay_at": (10, 5)}, "config.decay_at"), ({"crop": (1,)}, "config.crop"),
                       ({"norm": (1.0, 0.0)}, "config.norm"), ({"iterations": 2.5}, "config.iterations"),
                       ({"validation_frac": 1.0}, "config.validation_frac")]:  # fmt: skip
        with pytest.raises((ValueError, TypeError), match=field.replace(".", r"\.")):
            tiny(**bad)


def test_masked_pixels_and_empty_stars_never_give_a_nan_loss():
    observed, synthetic = domains(12, 12, seed=5)
    ivar = np.array(observed.ivar)
    ivar[0] = 0.0  # a star with no measured pixel: left out
    ivar[1:, 10:20] = 0.0  # a masked stretch in every other star
    ivar[2, 30] = 1.0 / 0.2**2  # an error above err_max: masked in the distance
    flux = np.array(observed.flux)
    flux[1, 12] = np.nan  # NaN flux: masked by the container
    res = cs.fit(Spectra(flux, ivar=ivar), synthetic, key=jax.random.key(1), config=tiny(iterations=6),
                 progress=False)  # fmt: skip
    for k, v in res.history.items():
        assert np.all(np.isfinite(v)), k
    out = cs.transfer(res.model, Spectra(flux, ivar=ivar), "obs->synth", progress=False)
    assert np.all(np.isfinite(out))
