"""jaxemb.experiment's configs: declared once, checked, parsed from key=value, run as a command."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from jaxemb.experiment import Config, ConfigError, option, parse_overrides, run_command


class DemoError(ConfigError):
    pass


@dataclasses.dataclass(frozen=True)
class Demo(Config):
    program: ClassVar[str] = "demo"
    error: ClassVar[type[ConfigError]] = DemoError

    steps: int = option(10, minimum=1, resumable=True, help="steps")
    lr: float = option(0.1, positive=True, help="learning rate")
    name: str = option("a", choices=("a", "b c"), help="a name")
    flag: bool = option(False, help="a flag")
    dims: tuple[int, ...] = option((4, 8), positive=True, help="widths")
    path: str | None = option(None, help="optional path")
    extra: dict = option({}, help="free mapping")

    def check(self):
        if list(self.dims) != sorted(self.dims):
            raise self.invalid("dims", "increasing widths")


def test_parse_overrides_literals_strings_and_none():
    got = parse_overrides(
        ["steps=3", "lr=1e-3", "name=b c", "dims=(2, 4)", "--flag=True", "x=null"]
    )
    assert got == {"steps": 3, "lr": 1e-3, "name": "b c", "dims": (2, 4), "flag": True, "x": None}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])
    with pytest.raises(DemoError):
        parse_overrides(["=3"], error=DemoError)


def test_create_converts_and_checks_every_field():
    c = Demo.create({"lr": 1, "dims": [2, 4], "path": "/x", "extra": {"k": 1}})
    assert c.lr == 1.0 and isinstance(c.lr, float) and c.dims == (2, 4) and c.extra == {"k": 1}
    assert Demo.create().extra == {} and Demo.create().extra is not Demo.create().extra
    for bad, match in [
        ({"stepz": 1}, "Unknown config key 'stepz'.*dims, extra, flag, lr, name, path, steps"),
        ({"steps": 0}, r"steps=0 is invalid: expected a value >= 1 \(default 10\)"),
        ({"steps": 2.0}, "steps=2.0 is invalid: expected an integer"),
        ({"steps": True}, "steps=True is invalid"),
        ({"lr": -1}, "lr=-1 is invalid: expected a positive number"),
        ({"lr": "fast"}, "lr='fast' is invalid: expected a number"),
        ({"name": "c"}, "name='c' is invalid: expected one of 'a', 'b c'"),
        ({"flag": 1}, "flag=1 is invalid: expected True or False"),
        ({"dims": (4, -1)}, "dims=.* is invalid: expected positive entries"),
        ({"dims": (8, 4)}, r"dims=\(8, 4\) is invalid: expected increasing widths"),
        ({"path": 3}, "path=3 is invalid: expected a string or None"),
    ]:
        with pytest.raises(DemoError, match=match) as info:
            Demo.create(bad)
        assert "\n" not in str(info.value)


def test_resumable_keys_record_and_help():
    c = Demo.create({"steps": 20})
    assert Demo.resumable_keys() == ("steps",)
    assert c.record() == {
        "lr": 0.1,
        "name": "a",
        "flag": False,
        "dims": [4, 8],
        "path": None,
        "extra": {},
    }
    assert c.replace(steps=30).steps == 30
    with pytest.raises(DemoError, match="steps=0"):
        c.replace(steps=0)
    text = Demo.describe()
    assert "steps=10 (r): steps" in text and "lr=0.1: learning rate" in text
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.steps = 3


def _main(argv, calls):
    def train(config, workdir):
        calls.append((config, workdir))
        return {"score": config.steps * 2}

    return run_command(
        argv,
        config_class=Demo,
        program="demo",
        description="demo",
        default_workdir="runs/demo",
        train_and_evaluate=train,
        summarize=lambda c, r, w, s: f"score {r['score']} in {w}",
    )


def test_run_command_success_and_errors(capsys):
    calls = []
    assert _main(["--workdir", "w", "steps=4"], calls) == 0
    assert calls[0][0].steps == 4 and calls[0][1] == "w"
    assert "score 8 in w" in capsys.readouterr().out
    for argv, match in (
        [["steps=-1"], "steps=-1 is invalid"],
        [["bogus=1"], "Unknown config"],
        [["steps"], "key=value"],
    ):
        assert _main(argv, calls) == 2
        assert match in capsys.readouterr().err
    assert len(calls) == 1
    with pytest.raises(SystemExit):
        _main(["--help"], calls)
    assert "steps=10 (r): steps" in capsys.readouterr().out
