"""Resumable training checkpoints through orbax (see shared/design/training.md, "Checkpoints")."""

from jaxemb.checkpoint._manager import CheckpointConfigError as CheckpointConfigError
from jaxemb.checkpoint._manager import Checkpointer as Checkpointer
from jaxemb.checkpoint._manager import CheckpointWarning as CheckpointWarning

__all__ = ["Checkpointer", "CheckpointConfigError", "CheckpointWarning"]
