"""SIGTERM and SIGINT end a run cleanly: training stops at the next chunk boundary, the run is marked
`interrupted` and the process exits with 128 + the signal number (143 for SIGTERM, 130 for SIGINT).

SIGTERM is what SLURM, `docker stop` and schedulers send; SIGINT is Ctrl+C. A second Ctrl+C stops at
once (KeyboardInterrupt). Lightning registers its own SIGTERM handler during `fit` and keeps ours
beside it (its `_SignalConnector` composes the handler it finds); it then raises its
`SIGTERMException` after the batch, which `train` treats as the same interruption.

What is kept: `checkpoints/last.ckpt` of the last completed epoch. The partial epoch is not
checkpointed: its in-epoch state (the module's running sums, the probes' epoch-start weights and
per-step buffers) is not in a checkpoint, so `resume=true` re-trains that epoch from its start, which
is exact (every epoch's order is seeded by (seed, epoch)).

After training, the probes that measure the final weights (bsstudy/train/probe.py) call STOP.check before
every chunk of their evaluations: a signal there ends the run within one chunk, `interrupted`, and
`resume=true` measures them again without training (run.py: the checkpoint holds the whole training).
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager

import lightning as L

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(SystemExit):
    """A stop signal ended the run; its exit code is 128 + the signal number, the shell's convention."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal.Signals(self.signum).name}"


class StopRequest:
    """The process's record of a stop signal, set by the handler and checked at chunk boundaries."""

    def __init__(self):
        self.signum: int | None = None

    def handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: the user does not want to wait for the chunk
        if self.signum is None:
            log.warning(
                "%s received: stopping at the next chunk boundary (the run folder keeps the last completed "
                "epoch; resume=true continues it)%s",
                signal.Signals(signum).name,
                "; press Ctrl+C again to stop at once" if signum == signal.SIGINT else "",
            )
        self.signum = signum

    def check(self) -> None:
        """Raise RunInterrupted if a stop signal has arrived."""
        if self.signum is not None:
            raise RunInterrupted(self.signum)

    def install(self):
        """Handle SIGTERM and SIGINT from now on; return the function that restores the handlers found.
        Only the main thread may set handlers (Python's rule); elsewhere this does nothing."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for s in STOP_SIGNALS:
            signal.signal(s, self.handle)

        def restore() -> None:
            for s, handler in previous.items():
                signal.signal(s, handler)

        return restore

    @contextmanager
    def installed(self):
        """Handle SIGTERM and SIGINT within the block, then restore the handlers found."""
        restore = self.install()
        try:
            yield self
        finally:
            restore()


STOP = StopRequest()  # one per process: a signal between two jobs of a sweep stops the next one before it starts


class StopAtChunkBoundary(L.Callback):
    """Raise RunInterrupted after the chunk (one Lightning batch) in which a stop signal arrived, or before
    the next epoch starts if it arrived during the evaluation (the epoch's checkpoint is written by then)."""

    def __init__(self, request: StopRequest = STOP):
        self.request = request

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.request.check()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.request.check()
