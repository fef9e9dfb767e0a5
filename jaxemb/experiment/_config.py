"""Experiment configs declared once: a frozen dataclass whose fields carry their checks.

An experiment writes its settings as a ``Config`` subclass; every field is an :func:`option`
with its default, a help line, bounds or choices and whether it may change when a run resumes.
The ``key=value`` command line, the ``--help`` text, the type and range checks, the
checkpoint's config record and the list of resumable keys are all derived from that one
declaration.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar


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
      >>> from jaxemb.experiment import parse_overrides
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


def option(
    default: Any,
    *,
    help: str,
    resumable: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    choices: Iterable[Any] | None = None,
) -> Any:
    """A config field: its default, help line and checks.

    Args:
      default: the default value (immutable: tuples, not lists).
      help: one line for ``--help``.
      resumable: the value may change between a run and its resumption (e.g. the number of
        steps or an evaluation setting) without invalidating its checkpoints.
      minimum: inclusive lower bound for numbers (and for every entry of a tuple of numbers).
      maximum: inclusive upper bound.
      positive: numbers (or tuple entries) must be ``> 0``.
      choices: the allowed values.
    """
    meta = {
        "help": help,
        "resumable": resumable,
        "minimum": minimum,
        "maximum": maximum,
        "positive": positive,
        "choices": None if choices is None else tuple(choices),
    }
    if isinstance(default, (dict, list, set)):  # mutable: a fresh copy per instance
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()


def _describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a tuple of {_describe_type(typing.get_args(tp)[0])}s"
    if tp is type(None):
        return "None"
    return {int: "an integer", float: "a number", bool: "True or False", str: "a string"}.get(
        tp, "a mapping" if origin in (dict, Mapping) or tp in (dict,) else str(tp)
    )


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """``(ok, value)``: ``value`` converted to the annotated type, or ``ok=False``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False, value
        item = typing.get_args(tp)[0]
        out = []
        for v in value:
            ok, v = _coerce(v, item)
            if not ok:
                return False, value
            out.append(v)
        return True, tuple(out)
    if tp is dict or origin in (dict, Mapping):
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    raise TypeError(f"unsupported config field type {tp!r}")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of experiment configs (frozen dataclasses of :func:`option` fields).

    Subclasses declare fields and may override :meth:`check` for rules that involve several
    fields (raising ``self.invalid(key, expected)``). Build instances with :meth:`create`,
    which merges overrides, converts and checks every value.

    Examples:
      >>> import dataclasses
      >>> from jaxemb.experiment import Config, ConfigError, option
      >>> @dataclasses.dataclass(frozen=True)
      ... class Demo(Config):
      ...     steps: int = option(100, minimum=1, resumable=True, help="training steps")
      ...     lr: float = option(1e-3, positive=True, help="learning rate")
      >>> Demo.create({"steps": 20}).steps
      20
      >>> try:
      ...     Demo.create({"lr": -1})
      ... except ConfigError as e:
      ...     print(str(e).split(":")[0])
      Config value lr=-1 is invalid
      >>> Demo.resumable_keys(), Demo.create().record()
      (('steps',), {'lr': 0.001})
    """

    program: ClassVar[str] = "The experiment"
    error: ClassVar[type[ConfigError]] = ConfigError

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every key with its default."""
        return {f.name: _default(f) for f in dataclasses.fields(cls)}

    @classmethod
    def resumable_keys(cls) -> tuple[str, ...]:
        """Keys that may change between a run and its resumption."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable"))

    @classmethod
    def create(cls, overrides: Mapping[str, Any] | None = None) -> Config:
        """Defaults updated with ``overrides``, converted and checked.

        Raises:
          ConfigError (the class's ``error``): an unknown key (the message lists the known
            ones) or a value of the wrong type or out of range, in one paragraph.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values = cls.defaults()
        for key, value in (overrides or {}).items():
            if key not in fields:
                raise cls.error(
                    f"Unknown config key {key!r}. {cls.program} accepts: "
                    f"{', '.join(sorted(fields))}. Check the spelling, or run with --help to "
                    "see every key with its default value."
                )
            values[key] = value
        for key, f in fields.items():
            ok, value = _coerce(values[key], hints[key])
            if not ok:
                raise cls._invalid(key, values[key], _default(f), _describe_type(hints[key]))
            bad = cls._out_of_range(value, f.metadata)
            if bad:
                raise cls._invalid(key, values[key], _default(f), bad)
            values[key] = value
        config = cls(**values)
        config.check()
        return config

    @staticmethod
    def _out_of_range(value: Any, meta: Mapping[str, Any]) -> str | None:
        if meta.get("choices") is not None and value not in meta["choices"]:
            return "one of " + ", ".join(repr(c) for c in meta["choices"])
        items = value if isinstance(value, tuple) else (value,)
        numbers = [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
        lo, hi = meta.get("minimum"), meta.get("maximum")
        for v in numbers:
            if meta.get("positive") and not v > 0:
                return "a positive number" if not isinstance(value, tuple) else "positive entries"
            if lo is not None and v < lo:
                return f"a value >= {lo}" if not isinstance(value, tuple) else f"entries >= {lo}"
            if hi is not None and v > hi:
                return f"a value <= {hi}" if not isinstance(value, tuple) else f"entries <= {hi}"
        return None

    @classmethod
    def _invalid(cls, key: str, value: Any, default: Any, expected: str) -> ConfigError:
        return cls.error(
            f"Config value {key}={value!r} is invalid: expected {expected} (default "
            f"{default!r}). Fix the override on the command line and run again; nothing has "
            "been written."
        )

    def invalid(self, key: str, expected: str) -> ConfigError:
        """The one-paragraph error for a bad value of ``key`` (returned, for ``raise``)."""
        default = {f.name: _default(f) for f in dataclasses.fields(self)}[key]
        return self._invalid(key, getattr(self, key), default, expected)

    def check(self) -> None:
        """Rules involving several fields (override; raise ``self.invalid(key, expected)``)."""

    def replace(self, **changes: Any) -> Config:
        """A checked copy with ``changes`` applied."""
        return type(self).create({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Every key with its value."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def record(self) -> dict[str, Any]:
        """The settings a checkpoint belongs to: every non-resumable key, JSON-normalised."""
        keep = {k: v for k, v in self.to_dict().items() if k not in self.resumable_keys()}
        return json.loads(json.dumps(keep, default=str))

    @classmethod
    def describe(cls) -> str:
        """``--help`` text: every key with its default and help line."""
        lines = ["config keys (key=value; r: may change when a run resumes):"]
        for f in dataclasses.fields(cls):
            flag = " (r)" if f.metadata.get("resumable") else ""
            lines.append(f"  {f.name}={_default(f)!r}{flag}: {f.metadata.get('help', '')}")
        return "\n".join(lines)


def run_command(
    argv: list[str] | None,
    *,
    config_class: type[Config],
    program: str,
    description: str,
    default_workdir: str,
    train_and_evaluate: Callable[[Config, str], Any],
    summarize: Callable[[Config, Any, str, float], str],
    errors: tuple[type[BaseException], ...] = (),
) -> int:
    """The command line shared by the experiments: ``--workdir DIR key=value ...``.

    Known errors (``ConfigError``, a checkpoint directory of another run, ``errors``) are
    printed as one paragraph on stderr and give exit code 2; a diverged run
    (:class:`~jaxemb.checkpoint.DivergenceError`) prints its paragraph and gives exit code 3;
    on success ``summarize(config, result, workdir, seconds)`` is printed, exit code 0.
    Warnings (e.g. a damaged checkpoint set aside) print as one line each.
    """
    import argparse
    import sys
    import time
    import warnings

    from jaxemb.checkpoint import CheckpointConfigError, DivergenceError

    previous_format = warnings.formatwarning  # restored on return: a caller's process keeps its own
    warnings.formatwarning = _one_line_warning
    try:
        parser = argparse.ArgumentParser(
            prog=program,
            description=description,
            epilog=config_class.describe(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--workdir", default=default_workdir, help="output directory")
        parser.add_argument("overrides", nargs="*", help="config overrides as key=value")
        args = parser.parse_args(argv)
        try:
            config = config_class.create(parse_overrides(args.overrides, error=config_class.error))
            start = time.perf_counter()
            result = train_and_evaluate(config, args.workdir)
        except (ConfigError, CheckpointConfigError, *errors) as e:
            print(f"{program}: {e}", file=sys.stderr)
            return 2
        except DivergenceError as e:
            print(f"{program}: {e}", file=sys.stderr)
            return 3
        print(summarize(config, result, args.workdir, time.perf_counter() - start))
        return 0
    finally:
        warnings.formatwarning = previous_format


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    del filename, lineno, line
    return f"warning: {' '.join(str(message).split())} [{category.__name__}]\n"
