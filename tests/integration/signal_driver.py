"""``python tests/integration/signal_driver.py <lit_robust arguments>``: ``python -m lit_robust`` that sends
itself a signal once, from inside the run, so that tests can stop a run at an exact point.

Set by environment variables (inherited by the processes Lightning starts for DDP ranks):
``SIGNAL_HOOK`` (a hook of ``RobustClassifier``, or ``train_dataloader`` of the datamodule), ``SIGNAL_STEP``
(the global step; -1: during the sanity check), ``SIGNAL_NAME`` (``SIGTERM``, ``SIGUSR1``, ``SIGKILL``) and
``SIGNAL_RANK`` (the global rank that sends it; default 0).
"""

import os
import signal

from lit_robust.data import RobustDataModule
from lit_robust.methods.base import RobustClassifier

HOOK, NAME = os.environ["SIGNAL_HOOK"], os.environ["SIGNAL_NAME"]
STEP, RANK = int(os.environ["SIGNAL_STEP"]), int(os.environ.get("SIGNAL_RANK", "0"))
owner = RobustDataModule if HOOK == "train_dataloader" else RobustClassifier
original = getattr(owner, HOOK)


def send(self, *args, **kwargs):
    t = self.trainer
    if (
        not getattr(send, "done", False)
        and t.global_rank == RANK
        and t.sanity_checking == (STEP < 0)
        and t.global_step == max(STEP, 0)
    ):
        send.done = True
        os.kill(os.getpid(), getattr(signal, NAME))
    return original(self, *args, **kwargs)


setattr(owner, HOOK, send)

if __name__ == "__main__":
    from lit_robust.cli import main

    main()
