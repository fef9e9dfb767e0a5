"""Resumable training checkpoints through orbax (see shared/design/training.md, "Checkpoints").

``Checkpointer`` saves and restores the training state, verifies every step's files before it
is read back, and refuses to save a state that is not finite; ``check_finite`` is the same
divergence guard for the loss and any other value an experiment tracks.
"""

from jaxemb.checkpoint._guard import DivergenceError as DivergenceError
from jaxemb.checkpoint._guard import check_finite as check_finite
from jaxemb.checkpoint._manager import CheckpointConfigError as CheckpointConfigError
from jaxemb.checkpoint._manager import Checkpointer as Checkpointer
from jaxemb.checkpoint._manager import CheckpointWarning as CheckpointWarning

__all__ = [
    "Checkpointer",
    "CheckpointConfigError",
    "CheckpointWarning",
    "DivergenceError",
    "check_finite",
]
