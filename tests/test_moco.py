"""MoCo experiment end to end: within 3 kNN points of the quickstart's SimCLR at equal steps."""

import json

import pytest

from experiments import moco


@pytest.mark.slow
def test_moco_matches_simclr_knn_at_equal_steps(tmp_path_factory, shared_data_dir):
    # Reduced from the defaults (2000 steps of 256) to keep the suite fast; both methods get the
    # same model, data order, schedule and number of steps.
    data_dir = shared_data_dir  # digits prepared once per test run
    workdir = tmp_path_factory.mktemp("moco")
    config = moco.MocoConfig.create(
        dict(steps=120, batch_size=128, queue_size=512, log_every=40, data_dir=data_dir, devices=2)
    )
    summary = moco.train_and_evaluate(config, workdir)
    full = config.dims[-1]
    knn = summary["knn"]
    assert knn["moco"][full] >= knn["simclr"][full] - 0.03, knn
    assert knn["moco"][full] >= 0.85, knn  # far above chance (0.1)
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "moco_loss" in r] == [40, 80, 120]
    assert "| 64 |" in (workdir / "report.md").read_text()


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(queue_size=100), "queue_size"),  # smaller than the 2 x 256 keys per step
        (dict(momentum=1.5), "momentum"),
        (dict(mochi=True, mochi_n_hard=5000), "mochi_n_hard"),
        (dict(nonsense=1), "Unknown config key"),
        (dict(steps=0), "steps"),
    ],
)
def test_bad_config_is_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        moco.MocoConfig.create(overrides)
