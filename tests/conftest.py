"""Test configuration: 8 simulated CPU devices, set before JAX starts."""

import os
import shutil
import tempfile
import threading

# The suite compiles about 5,500 small XLA programs and spends most of its time compiling them;
# LLVM's optimisation passes are the larger part of each compile. Without them (opt level 0:
# XLA's own HLO fusion still runs, matmuls still go to their optimised library kernels) the
# suite runs about a fifth faster; the generated code is as valid, and float32 results differ
# from the optimised build in the last bits only, as they do between CPU kinds (the
# tolerances cover both; scripts/test.sh --isa runs other instruction sets). XLA's newer MLIR
# fusion emitters take about a third longer to compile the suite's many small fusions than the
# classic LLVM IR emitters, which jaxlib still ships (pinned in requirements.lock): the suite
# uses those. A user-given setting of either flag wins.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
if "xla_cpu_use_fusion_emitters" not in _flags:
    _flags += " --xla_cpu_use_fusion_emitters=false"
# XLA splits each program's LLVM module into parts to compile them on a thread pool; with a
# core per worker the parts only queue, and compiling each program whole takes about a fifth
# less time (same generated code).
if "xla_cpu_parallel_codegen_split_count" not in _flags:
    _flags += " --xla_cpu_parallel_codegen_split_count=1"
# The suite runs in two pytest-xdist workers, a core each: Eigen's multi-threaded matmuls would
# make each worker's kernels compete for the other's core (about 5% slower on the loss tests,
# neutral on the execution-bound trainings).
if "xla_cpu_multi_thread_eigen" not in _flags:
    _flags += " --xla_cpu_multi_thread_eigen=false"
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


def _reuse_mlir_context_per_thread():
    """JAX lowers every program in a new MLIR context, which loads all of JAX's dialects: a few
    milliseconds each (MLIR's authors measure 3.7 ms to set one up, llvm/llvm-project#217320),
    paid in full by this suite's ~10,000 small programs. Each thread of a test process keeps one
    context instead. The IR is the same; a context only interns the types and attributes of its
    modules, and those stay until the process ends, which for a test worker is the end of the
    run. Measured on four of the test files in one process: 85 s and 1.2 GB peak memory against
    114 s and 3.7 GB with a context per program.
    ``JAXEMB_TEST_FRESH_MLIR_CONTEXT=1`` restores JAX's own behaviour.
    """
    from jax._src.interpreters import mlir  # not public: without it the suite is only slower

    make_context = getattr(mlir, "make_ir_context", None)
    if make_context is None or os.environ.get("JAXEMB_TEST_FRESH_MLIR_CONTEXT"):
        return
    local = threading.local()

    def thread_context():
        if not hasattr(local, "context"):
            local.context = make_context()
        return local.context

    mlir.make_ir_context = thread_context


_reuse_mlir_context_per_thread()

# One persistent compilation cache per test run, shared by the xdist workers (they inherit the
# controller's environment): a function traced again to the same program (the experiments
# re-build their jitted steps on every run, doctests repeat the tests' shapes) is loaded instead
# of compiled again. The process that created the directory removes it at the end of the run.
_CACHE_ENV = "JAXEMB_TEST_JIT_CACHE_DIR"


# One TFDS data directory per test run too (unless $JAXEMB_DATA_DIR is set): the datasets the
# library prepares on first use (planted_dictionary, python_code_search, python_docs, digits)
# are prepared once per run, under the builders' file lock, whichever test or worker asks first,
# and the suite writes nothing under the home directory.
_DATA_ENV = "JAXEMB_DATA_DIR"


def pytest_configure(config):
    if _CACHE_ENV not in os.environ:
        os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="jaxemb-test-jit-cache-")
        config.stash[_cache_owner] = True
    if not os.environ.get(_DATA_ENV):
        os.environ[_DATA_ENV] = tempfile.mkdtemp(prefix="jaxemb-test-data-")
        config.stash[_data_owner] = True
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_ENV])
    # every program, however quick to compile: the xdist workers and re-built jits share them
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if config.stash.get(_cache_owner, False):
        shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)
    if config.stash.get(_data_owner, False):
        shutil.rmtree(os.environ.pop(_DATA_ENV), ignore_errors=True)


_cache_owner = pytest.StashKey[bool]()
_data_owner = pytest.StashKey[bool]()


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
def shared_data_dir():
    """The run's TFDS data directory ($JAXEMB_DATA_DIR, see pytest_configure), shared by every
    test and xdist worker: the large embedded datasets (``planted_dictionary``'s default config)
    are prepared once per run, under the builders' file lock, instead of once per test module.
    """
    return os.environ[_DATA_ENV]


def pytest_collection_modifyitems(config, items):
    """Slow end-to-end tests go first: pytest-xdist hands tests out in this order, so the long
    ones start while the many short ones fill the other worker, instead of one of them starting
    last and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable
