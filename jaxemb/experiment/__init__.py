"""The machinery every experiment shares.

An experiment (``experiments/``) only says what is particular to it — its config, model, step
and report content. This package holds the rest: the config declared once as a frozen
dataclass (``Config`` / ``option``, from which the ``key=value`` command line, ``--help``, the
checks and the resumable keys derive), the command line (``run_command``), the training loop
(``train_loop``: progress bar, ``metrics.jsonl`` flushed line by line, checkpoints, the
divergence guard), ``resume``, and the report writer (``Report``, used by ``jaxemb analyze``
too).
"""

from jaxemb.experiment._config import Config as Config
from jaxemb.experiment._config import ConfigError as ConfigError
from jaxemb.experiment._config import option as option
from jaxemb.experiment._config import parse_overrides as parse_overrides
from jaxemb.experiment._config import run_command as run_command
from jaxemb.experiment._loop import resume as resume
from jaxemb.experiment._loop import train_loop as train_loop
from jaxemb.experiment._metrics import MetricsLog as MetricsLog
from jaxemb.experiment._report import Report as Report

__all__ = [
    "Config",
    "ConfigError",
    "MetricsLog",
    "Report",
    "option",
    "parse_overrides",
    "resume",
    "run_command",
    "train_loop",
]
