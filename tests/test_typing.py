"""The shape aliases of ``jaxspec.typing`` describe what the forward models take and return."""

from __future__ import annotations

import typing

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import typing as jt
from jaxspec.models import cannon, lux, ppca, rsca

jaxtyping = pytest.importorskip("jaxtyping")


def test_aliases_check_shapes_with_any_leading_axes():
    assert isinstance(jnp.zeros((5, 30)), jt.Flux)
    assert isinstance(jnp.zeros(30), jt.Flux)  # one star
    assert isinstance(jnp.zeros((2, 3, 30)), jt.Flux)  # any batch axes
    assert not isinstance(jnp.zeros((5, 30), jnp.int32), jt.Flux)  # floats only
    assert not isinstance(np.zeros((5, 30)), jt.Flux)  # jax arrays: what the forward models return
    assert isinstance(jnp.zeros((5, 30), bool), jt.PixelMask) and not isinstance(jnp.zeros(3), jt.PixelMask)
    assert not isinstance(jnp.float32(1.0), jt.Latents)  # at least the latent axis


@pytest.mark.parametrize(
    "fn",
    [lux.decode, cannon.decode, ppca.decode, rsca.embed, lux.fit, ppca.fit, rsca.fit],
    ids=lambda f: f"{f.__module__}.{f.__name__}",
)
def test_public_signatures_use_the_aliases(fn):
    aliases = {id(jt.Flux), id(jt.LabelValues), id(jt.Latents), id(jt.Key)}

    def uses_alias(hint) -> bool:
        return id(hint) in aliases or any(uses_alias(arg) for arg in typing.get_args(hint))

    hints = typing.get_type_hints(fn)
    assert any(uses_alias(h) for h in hints.values()), f"{fn.__name__}: no jaxspec.typing alias in {hints}"


def test_forward_models_return_what_they_declare():
    """lux.decode (Latents -> LabelValues, Flux) and ppca.decode (Latents -> Flux), on one star and a batch."""
    a, b = np.ones((2, 3), np.float32), np.ones((7, 3), np.float32)
    from jaxspec.data.preprocess import Standardizer

    model = lux.Model(
        lux.Params(a, b, np.zeros(7, np.float32)),
        Standardizer(np.zeros(2), np.ones(2)),
        label_names=("A", "B"),
        wavelengths=(np.arange(7.0),),
        config=lux.Config(n_latents=3),
    )
    for z in (np.ones(3, np.float32), np.ones((4, 3), np.float32)):
        labels, flux = lux.decode(model, z)
        assert isinstance(labels, jt.LabelValues) and isinstance(flux, jt.Flux)
        assert labels.shape[:-1] == flux.shape[:-1] == z.shape[:-1]
    pmodel = ppca.Model(
        np.zeros(7, np.float32), np.ones((7, 3), np.float32), np.asarray(0.1), config=ppca.Config(n_components=3)
    )
    out = ppca.decode(pmodel, np.ones((4, 3), np.float32))
    assert isinstance(out, jt.Flux) and out.shape == (4, 7)
