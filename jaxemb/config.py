"""Experiment configs: ``key=value`` command-line overrides, checks and one-paragraph errors.

The experiment scripts (``experiments/quickstart.py``, ``train_sae.py``, ``moco.py``) keep their
defaults in a plain dict and accept overrides on the command line. This module holds what they
share: parsing the overrides, rejecting unknown keys and bad values with a message that says
what to do, and the ``main`` that turns those errors into exit code 2.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A problem with a config, its data or its workdir, explained in one paragraph."""


def parse_overrides(items: Iterable[str], *, error: type[ValueError] = ConfigError) -> dict:
    """Parses ``key=value`` strings; values are Python literals, ``None`` or plain strings.

    Args:
      items: strings such as ``"steps=800"``, ``"dims=(8, 16)"`` or ``"encoder=conv"``.
      error: the exception class to raise (a ``ValueError`` subclass).

    Returns:
      A dict of overrides.

    Examples:
      >>> from jaxemb.config import parse_overrides
      >>> parse_overrides(["steps=800", "dims=(8, 16)", "encoder=conv", "data_dir=none"])
      {'steps': 800, 'dims': (8, 16), 'encoder': 'conv', 'data_dir': None}
    """
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise error(
                f"Cannot read the override {item!r}: overrides are written key=value, e.g. "
                "steps=800 or dims='(8, 16, 64)'. Run with --help for the list of keys."
            )
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        if raw.strip().lower() in ("none", "null"):
            value = None
        out[key.strip().lstrip("-")] = value
    return out


def merge_overrides(
    defaults: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    *,
    program: str,
    error: type[ValueError] = ConfigError,
) -> dict[str, Any]:
    """Returns ``defaults`` updated with ``overrides``; an unknown key raises ``error``.

    Examples:
      >>> from jaxemb.config import merge_overrides
      >>> merge_overrides({"steps": 10, "lr": 0.1}, {"steps": 20}, program="demo")
      {'steps': 20, 'lr': 0.1}
    """
    config = dict(defaults)
    for key, value in (overrides or {}).items():
        if key not in defaults:
            raise error(
                f"Unknown config key {key!r}. {program} accepts: {', '.join(sorted(defaults))}. "
                "Check the spelling, or run with --help to see every key with its default value."
            )
        config[key] = value
    return config


def invalid(
    config: Mapping[str, Any],
    defaults: Mapping[str, Any],
    key: str,
    expected: str,
    *,
    error: type[ValueError] = ConfigError,
) -> ValueError:
    """The one-paragraph error for a bad value of ``key`` (returned, for ``raise``)."""
    return error(
        f"Config value {key}={config[key]!r} is invalid: expected {expected} (default "
        f"{defaults[key]!r}). Fix the override on the command line and run again; nothing has "
        "been written."
    )


def check_numbers(
    config: Mapping[str, Any],
    defaults: Mapping[str, Any],
    *,
    positive_int: Iterable[str] = (),
    nonnegative_int: Iterable[str] = (),
    positive: Iterable[str] = (),
    nonnegative: Iterable[str] = (),
    booleans: Iterable[str] = (),
    error: type[ValueError] = ConfigError,
) -> None:
    """Checks the types and signs of numeric and boolean config values.

    Examples:
      >>> from jaxemb.config import ConfigError, check_numbers
      >>> try:
      ...     check_numbers({"steps": -1}, {"steps": 10}, positive_int=["steps"])
      ... except ConfigError as e:
      ...     print(str(e).split(":")[0])
      Config value steps=-1 is invalid
    """

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    rules = [
        (positive_int, lambda v: is_int(v) and v > 0, "a positive integer"),
        (nonnegative_int, lambda v: is_int(v) and v >= 0, "an integer >= 0"),
        (positive, lambda v: is_num(v) and v > 0, "a positive number"),
        (nonnegative, lambda v: is_num(v) and v >= 0, "a non-negative number"),
        (booleans, lambda v: isinstance(v, bool), "True or False"),
    ]
    for keys, ok, expected in rules:
        for key in sorted(keys):
            if not ok(config[key]):
                raise invalid(config, defaults, key, expected, error=error)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    del filename, lineno, line
    return f"warning: {' '.join(str(message).split())} [{category.__name__}]\n"


def run_main(
    argv: list[str] | None,
    *,
    program: str,
    description: str,
    defaults: Mapping[str, Any],
    default_workdir: str,
    make_config: Callable[[dict[str, Any]], dict[str, Any]],
    train_and_evaluate: Callable[[dict[str, Any], str], Any],
    summarize: Callable[[dict[str, Any], Any, str, float], str],
    errors: tuple[type[BaseException], ...] = (ConfigError,),
) -> int:
    """The command line shared by the experiment scripts: ``--workdir DIR key=value ...``.

    Known errors (``errors``) are printed as one paragraph on stderr and give exit code 2; a
    diverged run (:class:`~jaxemb.checkpoint.DivergenceError`) prints its paragraph and gives
    exit code 3; on success ``summarize(config, result, workdir, seconds)`` is printed and the
    exit code is 0. Warnings (e.g. a damaged checkpoint set aside) print as one line each.
    """
    from jaxemb.checkpoint import DivergenceError

    warnings.formatwarning = _one_line_warning
    parser = argparse.ArgumentParser(
        prog=program,
        description=description,
        epilog="config keys and defaults: " + ", ".join(f"{k}={v!r}" for k, v in defaults.items()),
    )
    parser.add_argument("--workdir", default=default_workdir, help="output directory")
    parser.add_argument("overrides", nargs="*", help="config overrides as key=value")
    args = parser.parse_args(argv)
    try:
        config = make_config(parse_overrides(args.overrides))
        start = time.perf_counter()
        result = train_and_evaluate(config, args.workdir)
    except (ConfigError, *errors) as e:
        print(f"{program}: {e}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"{program}: {e}", file=sys.stderr)
        return 3
    print(summarize(config, result, args.workdir, time.perf_counter() - start))
    return 0
