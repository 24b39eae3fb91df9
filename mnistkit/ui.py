"""Rich renderings of library progress callbacks (the library itself never prints)."""

from __future__ import annotations

from .console import note, out, stdout_is_tty


class TrainProgress:
    """A rich progress bar over training steps and a line per epoch, on a terminal only.

    Silent when disabled (--json) or when stdout is not a terminal; `log` notes still reach stderr
    unless disabled.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and stdout_is_tty()
        self.quiet = not enabled
        self._progress = None
        self._task = None
        self._epochs = 0

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=out(), transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False

    def log(self, message: str) -> None:
        if not self.quiet:
            note(message)

    # Callback protocol (mnistkit.train.Callback)
    def start(self, config, steps_per_epoch, device):
        self._epochs = config.epochs
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"epoch 1/{config.epochs}", total=steps_per_epoch, status=f"{config.model} on {device}")

    def step(self, steps):
        if self._progress is not None:
            self._progress.update(self._task, completed=steps)

    def epoch_end(self, stats):
        line = (f"epoch {stats.epoch:>3}/{self._epochs}  loss {stats.loss:.4f}  "
                f"test acc {stats.test_accuracy:.4f}  {stats.seconds:.2f} s")
        if self._progress is not None:
            self._progress.console.print(line)
            self._progress.update(self._task, completed=0, description=f"epoch {stats.epoch + 1}/{self._epochs}",
                                  status=f"acc {stats.test_accuracy:.4f}")
