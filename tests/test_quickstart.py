"""End-to-end quickstart on a reduced config: learning shows, resume works, bad input is refused."""

import json

import pytest

from experiments import quickstart as qs


@pytest.fixture(scope="module")
def data_dir(shared_data_dir):
    return shared_data_dir  # digits prepared once per test run


FAST = dict(probe_steps=100, sae_steps=150, sae_latents=128, sae_k=4, log_every=20)


@pytest.mark.slow
def test_quickstart_learns_then_resumes_and_guards_its_checkpoints(tmp_path, data_dir):
    """One reduced run, then its bookkeeping on the same workdir (one training, one compile):
    the learned embedding beats random init; re-running the finished run only evaluates (same
    numbers); a changed hyperparameter is refused without touching the checkpoints; a longer
    run resumes from the last checkpoint."""
    # One device for the long run (the suite's two workers have a core each); the resumed run
    # below continues it data-parallel over 2 of the 8 test devices.
    config = dict(FAST, steps=600, batch_size=128, ckpt_every=300, data_dir=data_dir, devices=1)
    config["dims"] = (4, 8, 64)  # the prefixes the assertions read
    summary = qs.train_and_evaluate(qs.QuickstartConfig.create(config), tmp_path)
    knn = summary["knn"]
    # Digits are easy at full width (random init scores ~0.96 kNN, this run ~0.94: learning
    # keeps it far above chance, 0.1) ...
    assert knn["learned"][64] >= 0.92, knn
    # ... and what training adds shows in the 4- and 8-dim Matryoshka prefixes, which beat the
    # random-init prefixes by 10 points (this run: ~31 and ~13)
    for m in (4, 8):
        assert knn["learned"][m] >= knn["random"][m] + 0.10, (m, knn)
    assert summary["rankme"]["learned"] > 1.0
    assert 0.0 <= summary["sae"]["dead_fraction"] <= 1.0
    assert summary["sae"]["fvu"] < 0.5
    report = (tmp_path / "report.md").read_text()
    for png in ("loss.png", "matryoshka.png", "spectrum.png", "sae_latents.png"):
        assert f"]({png})" in report
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(20, 601, 20))
    assert lines[-1]["final"] is True

    # The re-runs change only evaluation keys that may change on resume (a shorter probe and
    # SAE): what they check is the restored encoder, and they cost a fraction of the first run.
    cheap_eval = dict(probe_steps=10, sae_steps=10)
    again = qs.train_and_evaluate(qs.QuickstartConfig.create(dict(config, **cheap_eval)), tmp_path)
    assert again["timings"]["train_steps_run"] == 0
    assert again["knn"] == summary["knn"]

    ckpt = tmp_path / "checkpoints"
    before = {p: p.read_bytes() for p in ckpt.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="temperature"):
        qs.train_and_evaluate(qs.QuickstartConfig.create(dict(config, temperature=0.5)), tmp_path)
    after = {p: p.read_bytes() for p in ckpt.rglob("*") if p.is_file()}
    assert before == after
    # the command line turns it into a one-paragraph message and exit code 2
    argv = ["--workdir", str(tmp_path)] + [f"{k}={v!r}" for k, v in config.items()]
    assert qs.main(argv + ["temperature=0.5"]) == 2

    more = qs.train_and_evaluate(
        qs.QuickstartConfig.create(dict(config, steps=620, devices=2, **cheap_eval)), tmp_path
    )
    assert more["timings"]["train_steps_run"] == 20
    # the loss curve covers both runs, without a gap
    steps = [
        r["step"]
        for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
        if "loss" in r
    ]
    assert steps == list(range(20, 621, 20))


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["stepz=10"], "Unknown config key 'stepz'"),
        (["steps=-3"], "steps=-3 is invalid"),
        (["temperature=0"], "temperature=0 is invalid"),
        (["dims=(8, 4)"], "dims"),
        (["encoder=transformer"], "encoder"),
        (["steps"], "key=value"),
        (["devices=9"], "devices"),
        (["devices=0"], "devices"),
    ],
)
def test_bad_command_line_is_explained(overrides, match, capsys, tmp_path):
    assert qs.main(["--workdir", str(tmp_path / "w")] + overrides) == 2
    err = capsys.readouterr().err
    assert match in err
    assert not (tmp_path / "w").exists()


def test_unusable_data_dir_is_explained(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(qs.QuickstartError, match="data_dir"):
        qs.train_and_evaluate(
            qs.QuickstartConfig.create(dict(FAST, data_dir=str(not_a_dir))), tmp_path / "w"
        )
