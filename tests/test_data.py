"""Tests for jaxemb.data: embedded TFDS builders, data sources, the grain pipeline, augmentations.

Every check compares with an independent NumPy reading of the raw data or of the documented
generative process, or with an invariant (coverage, concatenation, identity).
"""

import gzip
import importlib.resources
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy import stats

from jaxemb import data

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """One data directory per test session (per xdist worker): datasets are prepared once."""
    return tmp_path_factory.mktemp("jaxemb_data")


@pytest.fixture(scope="session")
def csv():
    """The embedded csv read independently of jaxemb: pixels int [1797, 64], labels [1797]."""
    path = importlib.resources.files("jaxemb.data").joinpath("digits.csv.gz")
    with path.open("rb") as raw, gzip.open(raw, "rt") as f:
        rows = [[int(v) for v in line.strip().split(",")] for line in f if line.strip()]
    table = np.array(rows)
    return table[:, :64], table[:, 64]


@pytest.fixture(scope="session")
def digits(data_dir):
    return {s: data.load_arrays("digits", s, data_dir=data_dir) for s in ("train", "test")}


@pytest.fixture(scope="session")
def planted_small(data_dir):
    arrays = {
        s: data.load_arrays("planted_dictionary", s, data_dir=data_dir, config="small")
        for s in ("train", "test")
    }
    return arrays, data.planted_dictionary_atoms(data_dir=data_dir, config="small")


def _reference_split(labels):
    """The documented split rule, written again: per class, rng(0) permutation, 20% to test."""
    test = []
    for c in range(10):
        rows = [i for i in range(len(labels)) if labels[i] == c]
        n_test = int(np.floor(0.2 * len(rows) + 0.5))
        perm = np.random.default_rng(0).permutation(len(rows))
        test += [rows[j] for j in perm[:n_test]]
    test = sorted(test)
    train = sorted(set(range(len(labels))) - set(test))
    return np.array(train), np.array(test)


def _one_paragraph(err):
    msg = str(err.value)
    assert "\n" not in msg and len(msg) > 80, msg
    return msg


# ----------------------------------------------------------------------------- digits


def test_digits_counts_and_rows_match_csv(digits, csv):
    pixels, labels = csv
    assert pixels.shape == (1797, 64)
    train, test = digits["train"], digits["test"]
    ref_train, ref_test = _reference_split(labels)
    assert len(train["label"]) == len(ref_train) and len(test["label"]) == len(ref_test)
    assert len(train["label"]) + len(test["label"]) == 1797
    # Each split holds exactly the documented rows, in increasing csv order.
    np.testing.assert_array_equal(train["index"], ref_train)
    np.testing.assert_array_equal(test["index"], ref_test)
    for split in (train, test):
        assert split["image"].dtype == np.uint8 and split["image"].shape[1:] == (8, 8, 1)
        assert split["label"].dtype == np.int64
        np.testing.assert_array_equal(split["image"].reshape(-1, 64), pixels[split["index"]])
        np.testing.assert_array_equal(split["label"], labels[split["index"]])
    # Label counts per class: train + test reproduce the csv, and the split is stratified.
    csv_counts = np.bincount(labels, minlength=10)
    train_counts = np.bincount(train["label"], minlength=10)
    test_counts = np.bincount(test["label"], minlength=10)
    np.testing.assert_array_equal(train_counts + test_counts, csv_counts)
    np.testing.assert_array_equal(test_counts, np.floor(0.2 * csv_counts + 0.5).astype(int))


def test_digits_pixel_range_and_info(digits, data_dir):
    images = np.concatenate([digits["train"]["image"], digits["test"]["image"]])
    assert images.min() == 0 and images.max() == 16
    builder = data.Digits(data_dir=os.fspath(data_dir), file_format="array_record")
    info = builder.info
    assert "Alpaydin" in info.citation and "Kaynak" in info.citation
    assert "CC BY 4.0" in info.description
    assert info.features["label"].num_classes == 10
    assert info.splits["train"].num_examples == len(digits["train"]["label"])
    citation = importlib.resources.files("jaxemb.data").joinpath("digits_citation.rst")
    text = citation.read_text()
    assert "CC BY 4.0" in text and "Alpaydin" in text and "Kybernetika" in text


def test_digits_concurrent_first_use_prepares_once(tmp_path, csv):
    """Two processes preparing the same fresh data directory at once both get the same data."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from jaxemb import data
        a = data.load_arrays("digits", "test", data_dir={str(tmp_path)!r})
        print(int(a["index"].sum()), int(a["image"].astype(np.int64).sum()))
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    _, test = _reference_split(csv[1])
    expected = f"{test.sum()} {csv[0][test].sum()}"
    assert [o.strip() for o, _ in outs] == [expected, expected]
    versions = list((tmp_path / "digits").iterdir())
    assert [v.name for v in versions] == ["1.0.0"], versions  # no leftover incomplete dirs


# ----------------------------------------------------------------------------- data_source errors


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXEMB_DATA_DIR", str(tmp_path / "x"))
    assert data.default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("JAXEMB_DATA_DIR")
    assert data.default_data_dir() == pathlib.Path.home() / ".cache/jaxemb/tensorflow_datasets"


def test_unknown_name_and_split(data_dir):
    with pytest.raises(ValueError, match="no dataset named 'no_such_dataset_xyz'") as err:
        data.data_source("no_such_dataset_xyz", "train", data_dir=data_dir)
    _one_paragraph(err)
    with pytest.raises(ValueError, match=r"'validation' is not a split.*\['test', 'train'\]"):
        data.data_source("digits", "validation", data_dir=data_dir)
    with pytest.raises(ValueError, match="config for 'planted_dictionary' must be one of"):
        data.data_source("planted_dictionary", "train", data_dir=data_dir, config="huge")
    with pytest.raises(ValueError, match="config must be None for dataset 'digits'"):
        data.data_source("digits", "train", data_dir=data_dir, config="small")
    clash = data.PlantedDictionaryConfig(name="small", d_in=7)
    with pytest.raises(ValueError, match="name of a built-in"):
        data.data_source("planted_dictionary", "train", data_dir=data_dir, config=clash)


def test_data_dir_problems(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    with pytest.raises(ValueError, match="exists but is not a directory") as err:
        data.data_source("digits", "train", data_dir=a_file)
    _one_paragraph(err)

    # The tests run as root, for whom every permission check passes; simulate the permissions.
    real_access = os.access
    denied = {}

    def fake_access(path, mode, *args, **kwargs):
        if pathlib.Path(path) in denied and mode & denied[pathlib.Path(path)]:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", fake_access)
    unwritable = tmp_path / "unwritable"
    unwritable.mkdir()
    denied[unwritable] = os.W_OK
    with pytest.raises(ValueError, match="is not writable") as err:
        data.data_source("digits", "train", data_dir=unwritable)
    assert "chmod" in _one_paragraph(err)
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    denied[unreadable] = os.R_OK
    with pytest.raises(ValueError, match="cannot be read") as err:
        data.data_source("digits", "train", data_dir=unreadable)
    _one_paragraph(err)
    # A missing directory under a read-only parent cannot be created.
    monkeypatch.setattr(
        pathlib.Path, "mkdir", lambda self, *a, **k: (_ for _ in ()).throw(PermissionError(13, "x"))
    )
    with pytest.raises(ValueError, match="could not be created") as err:
        data.data_source("digits", "train", data_dir=tmp_path / "missing")
    _one_paragraph(err)


def test_missing_dir_for_downloadable_dataset(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*tfds build mnist") as err:
        data.data_source("mnist", "train", data_dir=tmp_path / "nowhere")
    _one_paragraph(err)


# ----------------------------------------------------------------------------- pipeline


def _ids(batch):
    return batch["i"].tolist()


def _source(n):
    return [{"i": np.int64(i), "x": np.full((2,), i, np.float32)} for i in range(n)]


def test_pipeline_is_function_of_seed_and_step():
    source = _source(37)
    a = data.make_pipeline(source, batch_size=8, seed=5)
    first = [_ids(next(a)) for _ in range(20)]
    assert a.step == 20 and a.get_state() == {"step": 20}
    b = data.make_pipeline(source, batch_size=8, seed=5, start_step=13)
    assert [_ids(next(b)) for _ in range(7)] == first[13:20]
    c = data.make_pipeline(source, batch_size=8, seed=5)
    assert [_ids(c.batch_at(s)) for s in (19, 3, 11)] == [first[19], first[3], first[11]]
    c.set_state({"step": 17})
    assert _ids(next(c)) == first[17] and c.step == 18
    with_threads = data.make_pipeline(source, batch_size=8, seed=5, num_threads=2)
    assert [_ids(next(with_threads)) for _ in range(20)] == first
    other_seed = data.make_pipeline(source, batch_size=8, seed=6)
    assert [_ids(next(other_seed)) for _ in range(20)] != first


def test_pipeline_epoch_coverage():
    n, bs = 40, 8  # the batch divides the epoch: each block of 5 batches is one epoch
    it = data.make_pipeline(_source(n), batch_size=bs, seed=1)
    epochs = [sum((_ids(next(it)) for _ in range(n // bs)), []) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(n))
    assert epochs[0] != epochs[1] != epochs[2]  # reshuffled every epoch
    assert epochs[0] != list(range(n))

    # 37 examples, 2 epochs, keep the last partial batch: every example exactly twice.
    it = data.make_pipeline(_source(37), batch_size=8, seed=2, num_epochs=2, drop_remainder=False)
    batches = [_ids(b) for b in it]
    assert [len(b) for b in batches] == [8] * 9 + [2] and it.num_steps == 10
    stream = sum(batches, [])
    assert sorted(stream[:37]) == list(range(37)) and sorted(stream[37:]) == list(range(37))
    # drop_remainder=True drops the last incomplete global batch.
    it = data.make_pipeline(_source(37), batch_size=8, seed=2, num_epochs=2)
    assert [_ids(b) for b in it] == batches[:9]
    # No shuffling: the source order, repeated.
    it = data.make_pipeline(_source(5), batch_size=4, seed=0, shuffle=False)
    assert [_ids(next(it)) for _ in range(3)] == [[0, 1, 2, 3], [4, 0, 1, 2], [3, 4, 0, 1]]


def test_pipeline_process_slices_concatenate_to_global_batch():
    source = _source(50)
    full = data.make_pipeline(source, batch_size=12, seed=3)
    default = data.make_pipeline(source, batch_size=12, seed=3, shard_index=None)
    shards = [
        data.make_pipeline(source, batch_size=12, seed=3, shard_index=i, shard_count=4)
        for i in range(4)
    ]
    for _ in range(9):
        want = next(full)
        np.testing.assert_array_equal(next(default)["i"], want["i"])  # one process: all rows
        parts = [next(s) for s in shards]
        assert all(len(p["i"]) == 3 for p in parts)
        for key in ("i", "x"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), want[key])


def test_pipeline_dict_source_matches_list_source():
    source = _source(23)
    columns = {
        "i": np.arange(23),
        "x": np.repeat(np.arange(23.0, dtype=np.float32), 2).reshape(23, 2),
    }
    a = data.make_pipeline(source, batch_size=6, seed=9, start_step=4)
    b = data.make_pipeline(columns, batch_size=6, seed=9, start_step=4)
    scale = {"transform": lambda ex: {"i": ex["i"], "x": ex["x"] * 2}}
    c = data.make_pipeline(columns, batch_size=6, seed=9, start_step=4, **scale)
    for _ in range(6):
        ba, bb, bc = next(a), next(b), next(c)
        np.testing.assert_array_equal(ba["i"], bb["i"])
        np.testing.assert_array_equal(ba["x"], bb["x"])
        np.testing.assert_array_equal(bc["x"], 2 * ba["x"])


def test_pipeline_validation():
    source = _source(10)
    with pytest.raises(ValueError, match="multiple of shard_count=4"):
        data.make_pipeline(source, batch_size=6, seed=0, shard_index=0, shard_count=4)
    with pytest.raises(ValueError, match="must be given together"):
        data.make_pipeline(source, batch_size=6, seed=0, shard_index=1)
    with pytest.raises(ValueError, match="shard_index must be <= 1"):
        data.make_pipeline(source, batch_size=6, seed=0, shard_index=2, shard_count=2)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        data.make_pipeline(source, batch_size=6, seed=-1)
    with pytest.raises(ValueError, match="source must not be empty"):
        data.make_pipeline([], batch_size=6, seed=0)
    with pytest.raises(ValueError, match="same leading"):
        data.make_pipeline({"a": np.zeros(3), "b": np.zeros(4)}, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="fill whole global batches"):
        data.make_pipeline(
            source,
            batch_size=4,
            seed=0,
            num_epochs=1,
            drop_remainder=False,
            shard_index=0,
            shard_count=2,
        )
    with pytest.raises(ValueError, match="start_step must be <= the number of batches"):
        data.make_pipeline(source, batch_size=4, seed=0, num_epochs=1, start_step=3)


def test_pipeline_over_digits_reads_the_right_rows(digits, data_dir):
    source = data.data_source("digits", "train", data_dir=data_dir)
    it = data.make_pipeline(source, batch_size=64, seed=4, start_step=30)
    pos = {int(r): k for k, r in enumerate(digits["train"]["index"])}
    for _ in range(3):
        batch = next(it)
        rows = [pos[int(r)] for r in batch["index"]]
        assert len(set(rows)) == 64
        np.testing.assert_array_equal(batch["image"], digits["train"]["image"][rows])
        np.testing.assert_array_equal(batch["label"], digits["train"]["label"][rows])


def test_mock_mnist_through_the_same_path(tmp_path):
    """A downloadable TFDS dataset (mocked) goes through data_source and make_pipeline."""
    n = 24
    order = data.make_pipeline(_source(n), batch_size=8, seed=7, start_step=2)
    with tfds.testing.mock_data(num_examples=n):
        source = data.data_source("mnist", "train", data_dir=tmp_path)
        assert len(source) == n
        it = data.make_pipeline(source, batch_size=8, seed=7, start_step=2)
        for _ in range(4):  # spans an epoch boundary (3 batches per epoch)
            batch, ids = next(it), _ids(next(order))
            assert batch["image"].shape == (8, 28, 28, 1) and batch["image"].dtype == np.uint8
            assert batch["label"].shape == (8,)
            want = np.stack([source[i]["image"] for i in ids])
            np.testing.assert_array_equal(batch["image"], want)
            np.testing.assert_array_equal(batch["label"], [source[i]["label"] for i in ids])


# ----------------------------------------------------------------------------- planted_dictionary


def _reference_atoms(seed, n_atoms, d_in):
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[0])
    atoms = rng.standard_normal((n_atoms, d_in))
    return atoms / np.linalg.norm(atoms, axis=1, keepdims=True)


def _check_codes(arrays, atoms, cfg):
    x, idx, coef = arrays["x"], arrays["atoms"], arrays["coefficients"]
    n = len(x)
    assert x.shape == (n, cfg.d_in) and idx.shape == coef.shape == (n, cfg.max_active)
    active = idx >= 0
    sizes = active.sum(axis=1)
    assert sizes.min() >= 1
    # Active entries first (increasing, distinct atoms), then padding -1 / 0.
    np.testing.assert_array_equal(active, np.arange(cfg.max_active)[None, :] < sizes[:, None])
    assert np.all(np.where(active[:, 1:], np.diff(idx, axis=1) > 0, True))
    assert np.all(coef[~active] == 0) and np.all(coef[active] > 0)
    # x minus the planted signal is the noise: mean 0 and std noise_std (float64 reference).
    signal = np.einsum(
        "nk,nkd->nd", coef.astype(np.float64), atoms.astype(np.float64)[np.where(active, idx, 0)]
    )
    noise = x - signal
    se = cfg.noise_std / np.sqrt(noise.size)
    assert abs(noise.mean()) < 5 * se
    assert abs(noise.std() / cfg.noise_std - 1) < 0.05
    return sizes, idx[active]


def test_planted_small_atoms_codes_and_noise(planted_small, data_dir):
    arrays, atoms = planted_small
    cfg = data.PlantedDictionary.builder_configs["small"]
    assert atoms.shape == (cfg.n_atoms, cfg.d_in) and atoms.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(atoms.astype(np.float64), axis=1), 1.0, atol=1e-6)
    saved = np.load(pathlib.Path(data_dir) / "planted_dictionary/small/1.0.0/dictionary_atoms.npy")
    np.testing.assert_array_equal(saved, atoms)
    np.testing.assert_allclose(atoms, _reference_atoms(cfg.seed, cfg.n_atoms, cfg.d_in), atol=1e-6)
    assert len(arrays["train"]["x"]) == cfg.num_train and len(arrays["test"]["x"]) == cfg.num_test
    for split in ("train", "test"):
        _check_codes(arrays[split], atoms, cfg)
    assert not np.array_equal(arrays["train"]["x"][:100], arrays["test"]["x"][:100])


@pytest.mark.slow
def test_planted_default_statistics(shared_data_dir):
    data_dir = shared_data_dir
    cfg = data.PlantedDictionary.builder_configs["default"]
    assert (cfg.d_in, cfg.n_atoms, cfg.num_train, cfg.num_test) == (64, 256, 65_536, 8_192)
    train = data.load_arrays("planted_dictionary", "train", data_dir=data_dir)
    atoms = data.planted_dictionary_atoms(data_dir=data_dir)
    sizes, used = _check_codes(train, atoms, cfg)
    # Mean L0 = E[min(1 + Poisson(mean_active - 1), max_active)], computed with scipy.
    k = np.arange(cfg.max_active + 1)
    pmf = stats.poisson.pmf(k - 1, cfg.mean_active - 1)
    pmf[-1] = 1 - pmf[:-1].sum()
    mean_l0, var_l0 = (k * pmf).sum(), (k**2 * pmf).sum() - (k * pmf).sum() ** 2
    assert abs(sizes.mean() - mean_l0) < 5 * np.sqrt(var_l0 / len(sizes))
    # Power-law frequencies: atom 0 is the most used, rank correlates with the law, and even
    # the rarest atom is active hundreds of times (learnable from the training split).
    counts = np.bincount(used, minlength=cfg.n_atoms)
    assert counts.argmax() < 5 and counts.min() > 300
    assert stats.spearmanr(counts, -np.arange(cfg.n_atoms)).statistic > 0.9


def test_planted_custom_config(tmp_path):
    kwargs = dict(d_in=8, n_atoms=12, mean_active=2.0, max_active=4, num_train=256, num_test=64)
    cfg = data.PlantedDictionaryConfig(name="tiny", seed=3, **kwargs)
    train = data.load_arrays("planted_dictionary", "train", data_dir=tmp_path, config=cfg)
    atoms = data.planted_dictionary_atoms(data_dir=tmp_path, config=cfg)
    np.testing.assert_allclose(atoms, _reference_atoms(3, 12, 8), atol=1e-6)
    assert train["x"].shape == (256, 8)
    other = data.PlantedDictionaryConfig(name="tiny", seed=4, **kwargs)
    with pytest.raises(ValueError, match="different parameters") as err:
        data.data_source("planted_dictionary", "train", data_dir=tmp_path, config=other)
    _one_paragraph(err)
    with pytest.raises(ValueError, match="max_active must be <= n_atoms"):
        data.PlantedDictionaryConfig(name="bad", n_atoms=4, max_active=8)


# ----------------------------------------------------------------------------- augmentations


def _np_shift(img, dy, dx):
    """Image content moved by (dy, dx) with zero fill, written directly in NumPy."""
    h, w, _ = img.shape
    out = np.zeros_like(img)
    for y in range(h):
        for x in range(w):
            sy, sx = y - dy, x - dx
            if 0 <= sy < h and 0 <= sx < w:
                out[y, x] = img[sy, sx]
    return out


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0.5, 1.0, size=(64, 8, 8, 2)).astype(np.float32)


def test_augment_identity_shape_dtype_and_determinism(images):
    key = jax.random.key(1)
    same = data.augment_images(key, images, max_shift=0, noise_std=0.0, cutout_prob=0.0)
    np.testing.assert_array_equal(np.asarray(same), images)
    out = data.augment_images(key, images)
    assert out.shape == images.shape and out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), np.asarray(data.augment_images(key, images)))
    assert not np.array_equal(
        np.asarray(out), np.asarray(data.augment_images(jax.random.key(2), images))
    )
    jitted = jax.jit(lambda k, x: data.augment_images(k, x))(key, images)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(out))
    half = data.augment_images(key, jnp.asarray(images, jnp.bfloat16))
    assert half.dtype == jnp.bfloat16 and half.shape == images.shape
    legacy = data.augment_images(jax.random.PRNGKey(1), images)
    assert legacy.shape == images.shape


def test_augment_cutout_zeroes_exactly_a_square(images):
    s = 3
    out = np.asarray(
        data.augment_images(
            jax.random.key(3), images, max_shift=0, noise_std=0.0, cutout_size=s, cutout_prob=1.0
        )
    )
    for img, res in zip(images, out, strict=True):
        changed = res != img
        assert np.all(res[changed] == 0)
        assert np.array_equal(changed[..., 0], changed[..., 1])  # all channels together
        ys, xs = np.nonzero(changed[..., 0])
        assert len(ys) == s * s
        assert ys.max() - ys.min() == s - 1 and xs.max() - xs.min() == s - 1
    corners = {
        tuple(np.argwhere(r[..., 0] != i[..., 0]).min(0)) for r, i in zip(out, images, strict=True)
    }
    assert len(corners) > 5  # per-example positions
    # cutout_prob=0.5: about half of 400 images are cut (binomial, 5 sigma = 50).
    many = np.tile(images, (7, 1, 1, 1))[:400]
    res = np.asarray(
        data.augment_images(jax.random.key(4), many, max_shift=0, noise_std=0.0, cutout_prob=0.5)
    )
    cut = np.any(res != many, axis=(1, 2, 3)).sum()
    assert abs(cut - 200) < 50


def test_augment_shift_and_noise(images):
    m = 2
    out = np.asarray(
        data.augment_images(jax.random.key(5), images, max_shift=m, noise_std=0.0, cutout_prob=0.0)
    )
    shifts = set()
    for img, res in zip(images, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-m, m + 1)
            for dx in range(-m, m + 1)
            if np.array_equal(res, _np_shift(img, dy, dx))
        ]
        assert len(matches) == 1, matches
        shifts.add(matches[0])
    assert len(shifts) > 8  # per-example shifts
    noisy = np.asarray(
        data.augment_images(jax.random.key(6), images, max_shift=0, noise_std=0.2, cutout_prob=0.0),
        np.float64,
    )
    diff = noisy - images
    assert abs(diff.mean()) < 5 * 0.2 / np.sqrt(diff.size)
    assert abs(diff.std() / 0.2 - 1) < 0.03


def test_augment_validation(images):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="images must have rank 4"):
        data.augment_images(key, images[0])
    with pytest.raises(ValueError, match="images must have a float dtype"):
        data.augment_images(key, (images * 16).astype(np.uint8))
    with pytest.raises(ValueError, match="max_shift must be <= 7"):
        data.augment_images(key, images, max_shift=8)
    with pytest.raises(ValueError, match="cutout_prob must be in"):
        data.augment_images(key, images, cutout_prob=1.5)
    with pytest.raises(ValueError, match="noise_std must be in"):
        data.augment_images(key, images, noise_std=-0.1)
    with pytest.raises(ValueError, match="key must be a JAX PRNG key"):
        data.augment_images(np.zeros(3, np.uint32), images)
