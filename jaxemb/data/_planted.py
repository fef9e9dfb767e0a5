"""Synthetic sparse-dictionary activations with a known dictionary, as a TFDS builder."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

ATOMS_FILENAME = "dictionary_atoms.npy"
CONFIG_FILENAME = "planted_config.json"

DESCRIPTION = """\
Synthetic activations x = sum_i a_i d_i + noise built from a known dictionary D, so that a sparse
autoencoder's recovery of D can be measured (Sharkey et al., 2022, "Taking features out of
superposition with sparse autoencoders"; Elhage et al., 2022, "Toy models of superposition").

Generative process (every step seeded from the config's `seed`):
  * D: n_atoms rows drawn from N(0, I_{d_in}) and normalised to unit L2 norm. It is saved next to
    the prepared dataset as `dictionary_atoms.npy` (float32 [n_atoms, d_in]).
  * Atom frequencies follow a power law: atom j has weight (j + 1) ** -zipf_exponent, so atom 0 is
    the most frequent and atom n_atoms - 1 the rarest (about 16x rarer for the defaults).
  * Each sample draws its support size k = min(1 + Poisson(mean_active - 1), max_active), then k
    distinct atoms without replacement with probabilities proportional to the weights (Gumbel
    top-k), and magnitudes a_i ~ LogNormal(0, magnitude_sigma) (positive, heavy-tailed).
  * x = sum_i a_i d_i + N(0, noise_std^2 I).

Features: `x` float32 [d_in]; `atoms` int32 [max_active], the active atom indices in increasing
order, padded with -1; `coefficients` float32 [max_active], their magnitudes a_i, padded with 0.
So x - coefficients @ D[atoms] (over the unpadded entries) is exactly the noise.
"""


@dataclasses.dataclass(eq=False)
class PlantedDictionaryConfig(tfds.core.BuilderConfig):
    """Parameters of the ``planted_dictionary`` dataset (see the builder's description).

    Attributes:
      d_in: dimension of the activations x.
      n_atoms: number of dictionary atoms.
      mean_active: mean number of active atoms per sample (the mean L0 before clipping).
      max_active: largest number of active atoms per sample (the padded width of ``atoms``).
      zipf_exponent: atom j is drawn with weight ``(j + 1) ** -zipf_exponent``.
      magnitude_sigma: active magnitudes are ``LogNormal(0, magnitude_sigma)``.
      noise_std: standard deviation of the isotropic Gaussian noise added to x.
      num_train: number of training samples.
      num_test: number of test samples.
      seed: seed of the dictionary, the codes and the noise.
    """

    d_in: int = 64
    n_atoms: int = 256
    mean_active: float = 5.0
    max_active: int = 16
    zipf_exponent: float = 0.5
    magnitude_sigma: float = 0.75
    noise_std: float = 0.02
    num_train: int = 65_536
    num_test: int = 8_192
    seed: int = 0

    def __post_init__(self):
        for field in ("d_in", "n_atoms", "max_active", "num_train", "num_test"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be an integer >= 1; got {value!r}")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32); got {self.seed!r}")
        if self.max_active > self.n_atoms:
            raise ValueError(
                f"max_active must be <= n_atoms ({self.n_atoms}); got {self.max_active}"
            )
        if not 1.0 <= self.mean_active <= self.max_active:
            raise ValueError(
                f"mean_active must be in [1, max_active={self.max_active}]; "
                f"got {self.mean_active!r}"
            )
        for field in ("zipf_exponent", "magnitude_sigma", "noise_std"):
            value = getattr(self, field)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{field} must be a finite number >= 0; got {value!r}")


DEFAULT_CONFIG = PlantedDictionaryConfig(
    name="default",
    description="d_in=64, 256 atoms, about 5 active per sample, 65,536 train / 8,192 test.",
)
SMALL_CONFIG = PlantedDictionaryConfig(
    name="small",
    description="A quick variant for tests and examples: d_in=16, 32 atoms, 4,096 / 1,024.",
    d_in=16,
    n_atoms=32,
    mean_active=3.0,
    max_active=8,
    num_train=4_096,
    num_test=1_024,
)


_BASE_FIELDS = frozenset(tfds.core.BuilderConfig.__dataclass_fields__)


def config_fields(config: PlantedDictionaryConfig) -> dict[str, Any]:
    """The generative parameters of ``config`` (everything but name, version, description...)."""
    fields = PlantedDictionaryConfig.__dataclass_fields__
    return {f: getattr(config, f) for f in fields if f not in _BASE_FIELDS}


def _streams(config: PlantedDictionaryConfig) -> list[np.random.Generator]:
    children = np.random.SeedSequence(config.seed).spawn(3)
    return [np.random.default_rng(s) for s in children]


def make_atoms(config: PlantedDictionaryConfig) -> np.ndarray:
    """The config's dictionary: float32 [n_atoms, d_in] with unit-norm rows."""
    rng = _streams(config)[0]
    atoms = rng.standard_normal((config.n_atoms, config.d_in))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    return atoms.astype(np.float32)


def atom_weights(config: PlantedDictionaryConfig) -> np.ndarray:
    """Drawing probability of each atom (power law, sums to 1): float64 [n_atoms]."""
    w = (np.arange(config.n_atoms) + 1.0) ** -config.zipf_exponent
    return w / w.sum()


def make_split(
    config: PlantedDictionaryConfig, atoms: np.ndarray, split: str
) -> dict[str, np.ndarray]:
    """Draws one split: ``x`` [n, d_in], ``atoms`` and ``coefficients`` [n, max_active]."""
    n = config.num_train if split == "train" else config.num_test
    rng = _streams(config)[1 if split == "train" else 2]
    k_max = config.max_active
    sizes = np.minimum(1 + rng.poisson(config.mean_active - 1.0, size=n), k_max)
    # Gumbel top-k: the k largest of log(w) + Gumbel noise are k draws without replacement.
    keys = np.log(atom_weights(config))[None, :] + rng.gumbel(size=(n, config.n_atoms))
    top = np.argpartition(-keys, k_max - 1, axis=1)[:, :k_max]
    top_keys = np.take_along_axis(keys, top, axis=1)
    top = np.take_along_axis(top, np.argsort(-top_keys, axis=1), axis=1)  # best first
    active = np.arange(k_max)[None, :] < sizes[:, None]
    idx = np.where(active, top, config.n_atoms)  # n_atoms sorts after every real index
    order = np.argsort(idx, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    active = np.take_along_axis(active, order, axis=1)
    mags = rng.lognormal(0.0, config.magnitude_sigma, size=(n, k_max))
    coeffs = np.where(active, mags, 0.0)
    codes = np.zeros((n, config.n_atoms + 1))
    np.put_along_axis(codes, idx, coeffs, axis=1)
    x = codes[:, : config.n_atoms] @ atoms.astype(np.float64)
    x += config.noise_std * rng.standard_normal((n, config.d_in))
    return {
        "x": x.astype(np.float32),
        "atoms": np.where(active, idx, -1).astype(np.int32),
        "coefficients": coeffs.astype(np.float32),
    }


class PlantedDictionary(tfds.core.GeneratorBasedBuilder):
    """Sparse combinations of a known unit-norm dictionary plus noise (synthetic, no download)."""

    VERSION = tfds.core.Version("1.0.0")
    # TFDS derives code_path from the package with `importlib_resources`, which is not a
    # dependency of TFDS and may be missing; pointing it at this file avoids that import.
    code_path = epath.Path(__file__)
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [DEFAULT_CONFIG, SMALL_CONFIG]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "x": tfds.features.Tensor(
                        shape=(cfg.d_in,), dtype=np.float32, encoding="bytes"
                    ),
                    "atoms": tfds.features.Tensor(
                        shape=(cfg.max_active,), dtype=np.int32, encoding="bytes"
                    ),
                    "coefficients": tfds.features.Tensor(
                        shape=(cfg.max_active,), dtype=np.float32, encoding="bytes"
                    ),
                }
            ),
            disable_shuffling=True,
            homepage="https://transformer-circuits.pub/2022/toy_model/index.html",
            citation=r"""@misc{sharkey2022taking,
  author = {Sharkey, Lee and Braun, Dan and Millidge, Beren},
  title  = {Taking features out of superposition with sparse autoencoders},
  year   = {2022},
  note   = {AI Alignment Forum interim report}
}""",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Synthetic: nothing to download.
        cfg = self.builder_config
        atoms = make_atoms(cfg)
        # data_dir is the temporary preparation directory here; TFDS renames it into place.
        with open(f"{self.data_dir}/{ATOMS_FILENAME}", "wb") as f:
            np.save(f, atoms)
        with open(f"{self.data_dir}/{CONFIG_FILENAME}", "w") as f:
            json.dump(config_fields(cfg), f, sort_keys=True)
        return {
            split: self._generate_examples(arrays=make_split(cfg, atoms, split))
            for split in ("train", "test")
        }

    def _generate_examples(self, arrays):
        for i in range(len(arrays["x"])):
            yield i, {name: values[i] for name, values in arrays.items()}
