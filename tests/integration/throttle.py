"""``SleepPerStep``: a callback that sleeps after every training batch, for tests that must act on a fit
while it runs (kill it mid-run): a tiny fit otherwise ends within a second, before a poller that the
loaded machine schedules late can see it. Sleeping leaves the CPU to the poller; the weights are those of
the same fit without it. Subprocesses import it with ``tests/integration`` on ``PYTHONPATH``."""

import time

from lightning.pytorch import Callback


class SleepPerStep(Callback):
    def __init__(self, seconds: float = 0.01) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)
