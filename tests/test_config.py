"""jaxemb.config: overrides, checks and the shared experiment command line."""

import pytest

from jaxemb.config import (
    ConfigError,
    check_numbers,
    invalid,
    merge_overrides,
    parse_overrides,
    run_main,
)

DEFAULTS = {"steps": 10, "lr": 0.1, "name": "a", "flag": False, "dims": (4, 8)}


def test_parse_overrides_literals_strings_and_none():
    got = parse_overrides(
        ["steps=3", "lr=1e-3", "name=b c", "dims=(2, 4)", "--flag=True", "x=null"]
    )
    assert got == {"steps": 3, "lr": 1e-3, "name": "b c", "dims": (2, 4), "flag": True, "x": None}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])

    class Mine(ConfigError):
        pass

    with pytest.raises(Mine):
        parse_overrides(["=3"], error=Mine)


def test_merge_and_checks():
    assert merge_overrides(DEFAULTS, {"lr": 0.5}, program="p")["lr"] == 0.5
    with pytest.raises(
        ConfigError, match="Unknown config key 'stepz'.*dims, flag, lr, name, steps"
    ):
        merge_overrides(DEFAULTS, {"stepz": 1}, program="p")
    for bad in ({"steps": 0}, {"steps": 2.0}, {"steps": True}):
        with pytest.raises(ConfigError, match="steps="):
            check_numbers(DEFAULTS | bad, DEFAULTS, positive_int=["steps"])
    with pytest.raises(ConfigError, match="lr=-1"):
        check_numbers(DEFAULTS | {"lr": -1}, DEFAULTS, nonnegative=["lr"])
    with pytest.raises(ConfigError, match="True or False"):
        check_numbers(DEFAULTS | {"flag": 1}, DEFAULTS, booleans=["flag"])
    check_numbers(DEFAULTS, DEFAULTS, positive_int=["steps"], positive=["lr"], booleans=["flag"])
    err = invalid(DEFAULTS, DEFAULTS, "name", "a word")
    assert "name='a' is invalid: expected a word (default 'a')" in str(err)


def _main(argv, calls):
    def make_config(over):
        config = merge_overrides(DEFAULTS, over, program="demo")
        check_numbers(config, DEFAULTS, positive_int=["steps"])
        return config

    def train(config, workdir):
        calls.append((config, workdir))
        return {"score": config["steps"] * 2}

    return run_main(
        argv,
        program="demo",
        description="demo",
        defaults=DEFAULTS,
        default_workdir="runs/demo",
        make_config=make_config,
        train_and_evaluate=train,
        summarize=lambda c, r, w, s: f"score {r['score']} in {w}",
    )


def test_run_main_success_and_errors(capsys):
    calls = []
    assert _main(["--workdir", "w", "steps=4"], calls) == 0
    assert calls[0][0]["steps"] == 4 and calls[0][1] == "w"
    assert "score 8 in w" in capsys.readouterr().out
    for argv, match in (
        [["steps=-1"], "steps=-1 is invalid"],
        [["bogus=1"], "Unknown config"],
        [["steps"], "key=value"],
    ):
        assert _main(argv, calls) == 2
        assert match in capsys.readouterr().err
    assert len(calls) == 1
