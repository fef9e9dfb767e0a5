"""The machinery every experiment shares: the training loop, resume, and ``metrics.jsonl``.

An experiment (``experiments/``) only says what is particular to it — its model, step and
report; this package runs the steps with a progress bar, logs metrics (flushed line by line),
saves and restores checkpoints, and stops a diverged run (``jaxemb.checkpoint``'s guard).
"""

from jaxemb.experiment._loop import resume as resume
from jaxemb.experiment._loop import train_loop as train_loop
from jaxemb.experiment._metrics import MetricsLog as MetricsLog

__all__ = ["MetricsLog", "resume", "train_loop"]
