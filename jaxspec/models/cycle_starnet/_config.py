"""How Cycle-StarNet is built and trained (defaults: O'Briain et al. 2021, Appendices A and B)."""

from __future__ import annotations

import dataclasses

from jaxspec import io
from jaxspec.data._checks import check_float, check_int, check_widths

__all__ = ["Config", "network_lengths"]


def _check_ints(value, name: str, minimum: int) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or len(value) == 0:
        raise ValueError(f"{name}: expected a non-empty tuple of ints, found {value!r}")
    return tuple(check_int(v, f"{name}[{i}]", minimum=minimum) for i, v in enumerate(value))


def _check_pair(value, name: str) -> tuple[int, int]:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{name}: expected (pixels dropped at the start, at the end), found {value!r}")
    return tuple(check_int(v, f"{name}[{i}]", minimum=0) for i, v in enumerate(value))


@io.register("cycle_starnet.Config", arrays={})
@dataclasses.dataclass(frozen=True)
class Config:
    r"""Sizes, loss weights and training settings of Cycle-StarNet; the paper's are the defaults.

    Architecture (Table 2; every convolution unpadded, kernel ``kernel``,
    LeakyReLU of slope ``leaky_slope`` after every layer but the latent and
    output ones; Xavier-uniform kernels and biases of 0.01 as in the
    authors' code):

    * ``E_synth``, ``E_obs``: convolutions of ``domain_filters`` filters and
      ``domain_strides`` strides (32, 64; 4, 4): 7167 -> 1791 -> 447 pixels.
    * ``E_sh``: ``shared_filters`` / ``shared_strides`` (128, 256, 512; 4, 2,
      2) then a 1x1 convolution to ``shared_z`` channels and a non-affine
      instance norm: :math:`z_{sh}` is 25 x 24.
    * ``E_sp``: ``split_filters`` / ``split_strides`` (32, 32, 32; 4, 2, 2),
      1x1 to ``split_z`` channels (4; 1 in the paper's missing-lines
      experiment; 0: no split latent space), instance norm: :math:`z_{sp}` 4 x 24.
    * ``D_sh``, ``D_sp``, ``D_synth``, ``D_obs``: the mirrored transposed
      convolutions; ``D_obs`` takes ``D_sh``'s and ``D_sp``'s outputs
      stacked as channels; the output is a 1x1 convolution (no activation).
    * Critics ``C_synth``, ``C_obs``: ``critic_filters`` convolutions of
      stride ``critic_stride`` on the spectrum (16-256; 4: 7167 -> 6) and
      ``critic_latent_filters`` 1x1 convolutions on the latents (32-512),
      flattened, joined by a dense layer and a sigmoid.

    Loss (Eq. 1): ``weight_synth (L_rec,synth + L_cr,synth) + weight_obs
    (L_rec,obs + L_cr,obs) + weight_adv (L_adv,synth + L_adv,obs)``, with
    the critics' own loss scaled by ``weight_critic``.  The paper's 3, 9, 1
    (Section 4.1); its missing-lines runs used 90, 90, 1
    (:meth:`missing_lines`).

    Training (Appendix B): ``iterations`` alternating generator and critic
    steps on batches of ``batch_size`` spectra of each domain; Adam
    (``betas``, the authors' code: 0.5, 0.999) at ``learning_rate``, times
    ``decay_factor`` at each of ``decay_at`` iterations.  Training runs whole
    passes over the observed spectra, so ``iterations`` is rounded up to a
    whole number of them (``history`` has one row per pass).

    Data: ``crop`` pixels are dropped at the start and end of every spectrum
    (the authors' code keeps ``x[:, 47:]`` of the 7214-pixel grid: 7167; the
    paper's text says they came off the red chip, the code takes the blue
    chip's first 47); flux is normalised by one mean and standard deviation
    (``norm``; None: those of the synthetic training spectra).  In the
    distance, an observed pixel's error is floored at ``err_floor`` and a
    pixel with an error above ``err_max`` (or ``ivar = 0``) is masked; every
    synthetic pixel has the error ``synthetic_err`` (flux units).

    Attributes
    ----------
    kernel, leaky_slope, domain_filters, domain_strides, shared_filters, shared_strides,
    shared_z, split_filters, split_strides, split_z, critic_filters, critic_stride,
    critic_latent_filters : architecture (above)
    weight_synth, weight_obs, weight_adv, weight_critic : float
    learning_rate : float
    betas : tuple of float
    decay_at : tuple of int
    decay_factor : float
    batch_size : int
    iterations : int
    crop : (int, int)
    norm : (float, float) or None
    err_floor, err_max, synthetic_err : float
    validation_frac : float in [0, 1)
        Spectra of each domain held out; ``history["val_loss"]`` is their
        weighted distance terms (no adversarial term) after each pass.
    """

    kernel: int = 7
    leaky_slope: float = 0.1
    domain_filters: tuple = (32, 64)
    domain_strides: tuple = (4, 4)
    shared_filters: tuple = (128, 256, 512)
    shared_strides: tuple = (4, 2, 2)
    shared_z: int = 25
    split_filters: tuple = (32, 32, 32)
    split_strides: tuple = (4, 2, 2)
    split_z: int = 4
    critic_filters: tuple = (16, 32, 64, 128, 256)
    critic_stride: int = 4
    critic_latent_filters: tuple = (32, 64, 128, 256, 512)
    weight_synth: float = 3.0
    weight_obs: float = 9.0
    weight_adv: float = 1.0
    weight_critic: float = 1.0
    learning_rate: float = 1e-4
    betas: tuple = (0.5, 0.999)
    decay_at: tuple = (50_000, 100_000, 150_000, 200_000)
    decay_factor: float = 0.7
    batch_size: int = 8
    iterations: int = 350_000
    crop: tuple = (47, 0)
    norm: tuple | None = None
    err_floor: float = 0.005
    err_max: float = 0.05
    synthetic_err: float = 0.005
    validation_frac: float = 0.1

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        check_int(self.kernel, "config.kernel", minimum=1)
        check_float(self.leaky_slope, "config.leaky_slope", low=0.0)
        for name in ("domain", "shared", "split"):
            filters = check_widths(getattr(self, f"{name}_filters"), f"config.{name}_filters")
            strides = _check_ints(getattr(self, f"{name}_strides"), f"config.{name}_strides", 1)
            if len(strides) != len(filters):
                raise ValueError(
                    f"config.{name}_strides: expected one stride per filter count ({len(filters)}), found {strides}"
                )
            set_(f"{name}_filters", filters)
            set_(f"{name}_strides", strides)
        if self.split_strides != self.shared_strides:
            raise ValueError(
                "config.split_strides: expected the shared encoder's strides (z_sh and z_sp share a length), "
                f"found {self.split_strides} and {self.shared_strides}"
            )
        check_int(self.shared_z, "config.shared_z", minimum=1)
        check_int(self.split_z, "config.split_z", minimum=0)
        set_("critic_filters", check_widths(self.critic_filters, "config.critic_filters"))
        check_int(self.critic_stride, "config.critic_stride", minimum=1)
        set_("critic_latent_filters", check_widths(self.critic_latent_filters, "config.critic_latent_filters"))
        for name in ("weight_synth", "weight_obs", "weight_adv", "weight_critic"):
            check_float(getattr(self, name), f"config.{name}", low=0.0)
        check_float(self.learning_rate, "config.learning_rate", low=0.0, open_low=True)
        if not isinstance(self.betas, tuple | list) or len(self.betas) != 2:
            raise ValueError(f"config.betas: expected (b1, b2) in [0, 1), found {self.betas!r}")
        for i, b in enumerate(self.betas):
            check_float(b, f"config.betas[{i}]", low=0.0, high=1.0)
        set_("betas", tuple(float(b) for b in self.betas))
        if not isinstance(self.decay_at, tuple | list):
            raise ValueError(f"config.decay_at: expected a tuple of iterations, found {self.decay_at!r}")
        decay = tuple(check_int(v, f"config.decay_at[{i}]", minimum=1) for i, v in enumerate(self.decay_at))
        if list(decay) != sorted(set(decay)):
            raise ValueError(f"config.decay_at: expected increasing iterations, found {decay}")
        set_("decay_at", decay)
        check_float(self.decay_factor, "config.decay_factor", low=0.0, open_low=True)
        check_int(self.batch_size, "config.batch_size", minimum=1)
        check_int(self.iterations, "config.iterations", minimum=1)
        set_("crop", _check_pair(self.crop, "config.crop"))
        if self.norm is not None:
            if not isinstance(self.norm, tuple | list) or len(self.norm) != 2:
                raise ValueError(f"config.norm: expected (mean, std) or None, found {self.norm!r}")
            check_float(self.norm[0], "config.norm[0]")
            check_float(self.norm[1], "config.norm[1]", low=0.0, open_low=True)
            set_("norm", (float(self.norm[0]), float(self.norm[1])))
        check_float(self.err_floor, "config.err_floor", low=0.0, open_low=True)
        check_float(self.err_max, "config.err_max", low=0.0, open_low=True)
        check_float(self.synthetic_err, "config.synthetic_err", low=0.0, open_low=True)
        check_float(self.validation_frac, "config.validation_frac", low=0.0)
        if not self.validation_frac < 1:
            raise ValueError(f"config.validation_frac: expected a value in [0, 1), found {self.validation_frac!r}")

    @classmethod
    def missing_lines(cls, **changes) -> Config:
        """The paper's missing-lines configuration (Section 4.2): a split latent space of one channel and the
        authors' loss weights of that experiment, 90 / 90 / 1 (``configs/new_lines_1.ini``)."""
        return cls(**{"split_z": 1, "weight_synth": 90.0, "weight_obs": 90.0, **changes})


def _conv_length(n: int, kernel: int, stride: int) -> int | None:
    """Output length of an unpadded convolution, or None where the transposed one would not give ``n`` back."""
    if n < kernel or (n - kernel) % stride:
        return None
    return (n - kernel) // stride + 1


def network_lengths(config: Config, n: int) -> dict[str, int] | None:
    """Lengths through the encoders for ``n`` input pixels: ``{"intermediate", "latent", "critic"}``.

    None when some convolution of the autoencoders does not divide exactly (its
    transposed convolution would not give the length back) or a critic
    convolution would have nothing to slide over.

    >>> network_lengths(Config(), 7167)
    {'intermediate': 447, 'latent': 24, 'critic': 6}
    """
    k, length = config.kernel, n
    for s in config.domain_strides:
        length = _conv_length(length, k, s)
        if length is None:
            return None
    inter, z = length, length
    for s in config.shared_strides:
        z = _conv_length(z, k, s)
        if z is None:
            return None
    c = n
    for _ in config.critic_filters:
        if c < k:
            return None
        c = (c - k) // config.critic_stride + 1
    return {"intermediate": inter, "latent": z, "critic": c}


def valid_lengths(config: Config, upto: int) -> list[int]:
    """Every pixel count up to ``upto`` that the networks of ``config`` take (``network_lengths`` not None)."""
    return [n for n in range(1, upto + 1) if network_lengths(config, n) is not None]
