"""Test configuration: 8 simulated CPU devices, set before JAX starts."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# Property tests draw the same examples on every run (seeded by each test's name), so a run of
# the suite is reproducible and CI cannot fail on an example no earlier run has seen.
from hypothesis import settings  # noqa: E402

settings.register_profile("jaxemb", derandomize=True, print_blob=True)
settings.load_profile("jaxemb")


@pytest.fixture(scope="session")
def mesh8():
    """A 1-D ``data`` mesh over the 8 simulated devices."""
    from jaxemb.parallel import make_mesh

    assert len(jax.devices()) == 8, jax.devices()
    return make_mesh(data=8, model=1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory):
    """One TFDS data directory shared by every test and xdist worker of the run.

    For the large embedded datasets (``planted_dictionary``'s default config): they are
    prepared once, under the builders' file lock, instead of once per test module.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, above the per-worker ones
    path = root / "shared_tfds"
    path.mkdir(exist_ok=True)
    return str(path)
