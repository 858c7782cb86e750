"""`python -m nextscale` for the interruption tests (tests/test_distributed.py), with one difference: once it has
published the checkpoint of step $NEXTSCALE_TEST_PAUSE_AT, each process waits (up to 5 minutes) for a stop
signal. The test's signal then lands at a known step however slow or loaded the machine is: SIGKILL at that step,
SIGTERM and Ctrl-C at the end of the next one. Test-only: this wraps the trainer's save in this process alone."""

import os
import runpy
import time

from nextscale.training.trainer import Trainer

PAUSE_AT = int(os.environ["NEXTSCALE_TEST_PAUSE_AT"])
publish = Trainer.save


def publish_then_wait(self):
    published = publish(self)
    if self.step == PAUSE_AT:
        deadline = time.monotonic() + 300
        while self.stop_signal is None and time.monotonic() < deadline:
            time.sleep(0.01)
    return published


Trainer.save = publish_then_wait
runpy.run_module("nextscale", run_name="__main__", alter_sys=True)
