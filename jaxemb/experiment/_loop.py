"""The training loop every experiment runs: steps, progress bar, metrics, checkpoints, guard."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tqdm.auto import tqdm

from jaxemb._validate import check_int
from jaxemb.checkpoint import Checkpointer, check_finite
from jaxemb.experiment._metrics import MetricsLog

StepFn = Callable[[Any, Any, int], tuple[Any, Mapping[str, Any]]]


def resume(checkpointer: Checkpointer, template: Any, *, program: str) -> tuple[Any, int]:
    """Restores the newest usable checkpoint onto ``template`` and says so in one line.

    Args:
      checkpointer: the run's :class:`~jaxemb.checkpoint.Checkpointer`.
      template: the freshly initialised state (its shapes, dtypes and shardings).
      program: the experiment's name, the prefix of the line.

    Returns:
      ``(state, start)``: the restored state and its step, or ``(template, 0)``. When a step
      was restored, ``"<program>: resumed from step <start> (<checkpoint dir>)"`` is printed
      and flushed (also when stdout is a file or a pipe).
    """
    state, start = checkpointer.restore_or_init(template)
    start = int(start)
    if start:
        print(f"{program}: resumed from step {start} ({checkpointer.directory})", flush=True)
    return state, start


def train_loop(
    step_fn: StepFn,
    state: Any,
    batches: Iterator[Any],
    *,
    steps: int,
    start: int = 0,
    log_every: int,
    metrics_log: MetricsLog,
    checkpointer: Checkpointer | None = None,
    saveable: Callable[[Any, int], Any] | None = None,
    desc: str = "train",
    show: str | None = "loss",
    finite: Sequence[str] = ("loss",),
    extra_log: Callable[[int], Mapping[str, Any]] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    """Runs steps ``start .. steps - 1`` with a progress bar, metrics, checkpoints and the guard.

    After step ``s`` (``done = s + 1`` steps completed):

    * every ``log_every`` steps and at the last step, the metrics returned by ``step_fn`` are
      fetched, written to ``metrics_log`` as ``{"step": done, **metrics, **extra_log(done)}``
      (flushed at once) and ``show`` is displayed on the bar;
    * every ``checkpointer.save_every`` steps and at the last step, ``saveable(state, done)``
      is saved;
    * before each log and each save, the metrics named in ``finite`` must be finite and the
      saved state too (:meth:`Checkpointer.save` refuses NaN/inf): otherwise
      :class:`~jaxemb.checkpoint.DivergenceError` stops the run with the step, the quantity
      and the last good checkpoint, and nothing non-finite is written.

    Args:
      step_fn: ``(state, batch, step) -> (state, metrics)``, one update; ``metrics`` maps names
        to scalars (device arrays are fetched only when logged or saved).
      state: the state before step ``start``.
      batches: yields the batch of step ``start`` first.
      steps: the total number of steps of the run.
      start: the first step to run (the restored step of a resumed run).
      log_every: the logging interval in steps.
      metrics_log: where the records go.
      checkpointer: saves the state; ``None`` never saves.
      saveable: ``(state, done) -> pytree`` to save (required with a checkpointer).
      desc: the progress bar's label.
      show: the metric shown on the bar.
      finite: the metrics checked by the divergence guard.
      extra_log: ``done -> dict`` of values added to each record (e.g. the learning rate).

    Returns:
      ``(state, history)``: the final state and the records logged by this call.

    Examples:
      >>> import tempfile, pathlib
      >>> from jaxemb.experiment import MetricsLog, train_loop
      >>> log = MetricsLog(pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl")
      >>> def step(total, batch, i):
      ...     return total + batch, {"loss": 1.0 / (total + batch)}
      >>> final, history = train_loop(step, 0, iter(range(1, 100)), steps=4, log_every=2,
      ...                             metrics_log=log, desc="demo")
      >>> final, [r["step"] for r in history], history[-1]["loss"]
      (10, [2, 4], 0.1)

    References:
      The train loop of Flax's examples and big_vision's trainers (periodic metrics, orbax
      checkpoints, resume at the restored step), with t5x's stop on a NaN loss.
    """
    check_int(steps, "steps", minimum=1)
    check_int(start, "start", minimum=0)
    check_int(log_every, "log_every", minimum=1)
    if checkpointer is not None and saveable is None:
        raise ValueError("saveable is required with a checkpointer: (state, done) -> pytree")
    history: list[dict[str, Any]] = []
    bar = tqdm(
        range(start, steps),
        desc=desc,
        initial=start,
        total=steps,
        dynamic_ncols=True,
        disable=None,
    )
    try:
        for step in bar:
            state, metrics = step_fn(state, next(batches), step)
            done = step + 1
            last = done == steps
            log_now = done % log_every == 0 or last
            save_now = checkpointer is not None and (done % checkpointer.save_every == 0 or last)
            if not (log_now or save_now):
                continue
            values = {k: float(v) for k, v in metrics.items()}
            guarded = {k: values[k] for k in finite if k in values}
            if guarded:
                check_finite(
                    done,
                    guarded,
                    last_good_step=None if checkpointer is None else checkpointer.latest_step(),
                    checkpoint_dir=None if checkpointer is None else checkpointer.directory,
                )
            if log_now:
                record = {"step": done, **values, **(extra_log(done) if extra_log else {})}
                history.append(record)
                metrics_log.write(record)
                if show is not None and show in values:
                    bar.set_postfix({show: f"{values[show]:.3f}"})
            if save_now:
                checkpointer.save(done, saveable(state, done), force=last)
    finally:
        bar.close()
    return state, history
