"""Recovery of the planted dictionary (jaxemb.data planted_dictionary) by each SAE variant.

The data are x = Σ a_i d_i + noise with 256 known unit atoms d_i in 64 dimensions, about 5 active
per row with log-normal magnitudes. An atom counts as recovered when some decoder row has cosine
above 0.9 with it (computed here in NumPy). Each training is a few hundred Adam steps at batch
1024 with a large learning rate, so that it fits a CPU test budget.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxemb import data, sae

BATCH = 1024
D_SAE = 512


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds_planted")
    x = data.load_arrays("planted_dictionary", "train", data_dir=data_dir)["x"]
    atoms = data.planted_dictionary_atoms(data_dir=data_dir)
    assert x.shape == (65536, 64) and atoms.shape == (256, 64)
    return x, atoms


def np_recovered(W_dec, atoms, threshold=0.9):
    W = np.asarray(W_dec, np.float64)
    W = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    D = np.asarray(atoms, np.float64)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    return float(np.mean((D @ W.T).max(axis=1) > threshold))


def train(model, x, *, steps, lr, input_norm=False, schedules=None):
    sae.init_b_dec(model, x[:4096])
    if input_norm:
        sae.fit_input_norm(model, x[:4096])
    train_step, state = sae.make_train_step(model, optax.adam(lr), schedules=schedules)
    batches = jnp.asarray(x[: (len(x) // BATCH) * BATCH].reshape(-1, BATCH, x.shape[1]))
    for i in range(steps):
        state, m = train_step(state, batches[i % batches.shape[0]])
    sae.sync(model, state)
    return state, {k: float(v) for k, v in m.items()}


def test_topk_recovers_planted_dictionary(planted):
    x, atoms = planted
    model = sae.TopKSAE(64, D_SAE, k=6, rngs=nnx.Rngs(0), dead_threshold=100_000)
    state, m = train(model, x, steps=250, lr=1e-2)
    recovered = np_recovered(state.params["W_dec"], atoms)
    assert recovered >= 0.9, (recovered, m)
    assert m["fvu"] < 0.2, m


def test_relu_recovers_planted_dictionary(planted):
    x, atoms = planted
    model = sae.ReluSAE(64, D_SAE, rngs=nnx.Rngs(0), l1_coef=5.0, dead_threshold=100_000)
    state, m = train(model, x, steps=600, lr=2e-2, input_norm=True)
    recovered = np_recovered(state.params["W_dec"], atoms)
    assert recovered >= 0.8, (recovered, m)
    assert m["l0"] < 15, m


def test_jumprelu_recovers_planted_dictionary(planted):
    x, atoms = planted
    model = sae.JumpReluSAE(
        64, D_SAE, rngs=nnx.Rngs(0), l0_coef=5.0, init_threshold=1.0, dead_threshold=100_000
    )
    state, m = train(model, x, steps=800, lr=1e-2, input_norm=True)
    recovered = np_recovered(state.params["W_dec"], atoms)
    assert recovered >= 0.8, (recovered, m)
    assert m["l0"] < 8, m


@pytest.mark.xfail(
    strict=False,
    reason="BatchTopK learns this dictionary slowly: ~50% of atoms at 400 steps, ~65% at 600, "
    "81% at 1200 (lr 1e-2); the >= 90% target is out of the CPU-test budget (issue-4 report)",
)
def test_batchtopk_recovers_planted_dictionary(planted):
    x, atoms = planted
    model = sae.BatchTopKSAE(64, D_SAE, k=6, rngs=nnx.Rngs(0), dead_threshold=100_000)
    state, m = train(model, x, steps=400, lr=1e-2)
    # Whatever the recovery, training did run and set the inference threshold.
    assert m["l0"] == 6.0 and float(state.buffers["threshold"]) > 0
    recovered = np_recovered(state.params["W_dec"], atoms)
    assert recovered >= 0.9, (recovered, m)
