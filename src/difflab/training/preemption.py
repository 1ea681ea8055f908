"""Write a checkpoint at the next optimizer-step boundary when the cluster warns of a time limit or preemption.

Signal handlers here only take note: saving from inside a handler (what Lightning's SLURMEnvironment
auto-requeue does) can catch the weights half-updated by the optimizer or the EMA and, under DDP, start a
collective while the interrupted code is inside another. The callback acts in on_train_batch_end, after the
optimizer step and the EMA update. Under DDP the ranks agree (one all-reduce) only every `check_every_n_steps`
optimizer steps, at the same global step on every rank, so that no other step pays for a collective.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch

from ..compat import log_step_before_stopping, skip_sigterm_broadcast
from .last_checkpoint import save_step

log = logging.getLogger("difflab")

# submitit's convention: its sbatch script asks SLURM for --signal=USR2@<signal_delay_s> before the time limit
# (and preemption moves that limit to now + GraceTime); SUBMITIT_PREEMPT_SIGNAL overrides it, there and here.
PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"


def requeue_signal() -> signal.Signals:
    """The signal that asks for checkpoint-and-requeue (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise)."""
    name = os.environ.get(PREEMPT_SIGNAL_ENV, "USR2")
    try:
        return signal.Signals[f"SIG{name}"]
    except KeyError:
        raise ValueError(f"{PREEMPT_SIGNAL_ENV}={name} is not a signal name (e.g. USR2)") from None


def requeue_signals() -> tuple[signal.Signals, ...]:
    """The signals that ask for checkpoint-and-requeue: requeue_signal() and SIGUSR1, the one Lightning's own SLURM
    requeue listens for (`#SBATCH --signal=SIGUSR1@90` in Lightning's docs), which difflab's Trainer leaves to it."""
    return tuple(dict.fromkeys([requeue_signal(), signal.SIGUSR1]))


class Preempted(SystemExit):
    """Training stopped on `signum` after saving `path` at `step`; `previous_handler` is what the signal was
    bound to before training started (submitit's requeue handler in a submitit job), to be run now.

    A SystemExit (like Lightning's SIGTERMException), so that no `except Exception` on the way up records it as
    a failed run; uncaught, the process exits with EXIT_CODE (130 after Ctrl-C, as a shell reports SIGINT).
    """

    EXIT_CODE = 3

    def __init__(self, signum: int, step: int, path: Path, previous_handler: Any) -> None:
        super().__init__(130 if signum == signal.SIGINT else self.EXIT_CODE)
        self.signum, self.step, self.path, self.previous_handler = signum, step, path, previous_handler

    @property
    def interrupted(self) -> bool:
        """True after Ctrl-C: the user stopped the run (nothing requeues it)."""
        return self.signum == signal.SIGINT

    def __str__(self) -> str:
        name = "SIGINT (Ctrl-C)" if self.interrupted else signal.Signals(self.signum).name
        return f"stopped on {name} at step {self.step} after saving {self.path}"


class CheckpointOnSignal(L.Callback):
    """On the requeue signal: finish the current optimizer step, save `path`, raise `Preempted`.

    Ctrl-C (SIGINT) does the same, once: a second Ctrl-C stops at once (Python's KeyboardInterrupt, which Lightning
    turns into its shutdown; CheckpointOnFailure saves the step just done when it lands after one, nothing when it
    lands mid-step). A process started with SIGINT ignored (nohup) keeps ignoring it.

    SIGUSR1 (Lightning's own SLURM requeue signal) does as the requeue signal does; SIGHUP (the terminal the run
    was started in closed, without nohup) as SIGTERM does outside SLURM: save, then stop.

    SIGTERM saves `path` at the next step boundary too. Under SLURM (`stop_on_sigterm=False`) training then
    goes on: SLURM sends SIGTERM first on preemption, `scancel` and at the time limit, and the requeue signal
    (if any) decides whether the job comes back. Elsewhere (`kill`, `docker stop`, `timeout`, a cloud VM's
    preemption notice) nothing else will come, so it raises `Preempted` as the requeue signal does and the
    process exits non-zero with a checkpoint to resume from. Either replaces Lightning's SIGTERM handling,
    which would stop training at once, exit 0 and save nothing.

    Under DDP the ranks compare notes every `check_every_n_steps` optimizer steps (one all-reduce, at steps
    that are multiples of it): SLURM warns minutes ahead (signal_delay_s), so a few steps of latency cost
    nothing, while an all-reduce after every step is a collective a single-GPU run would not need. A single
    process looks at its flags after every step (free). While it handles SIGTERM it also switches off
    Lightning's own per-batch SIGTERM broadcast under DDP (a collective per step that could only ever send 0:
    Lightning's SIGTERM handler, which sets its flag, is not called then; see compat.skip_sigterm_broadcast).
    """

    def __init__(
        self,
        path: str | Path,
        signum: int | None = None,
        stop_on_sigterm: bool | None = None,
        check_every_n_steps: int = 20,
    ) -> None:
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be at least 1 (got {check_every_n_steps})")
        self.path = Path(path)
        self.signum = int(signum if signum is not None else requeue_signal())
        # None: stop unless SLURM runs this job (there its requeue signal or its kill comes next).
        self.stop_on_sigterm = (
            "SLURM_JOB_ID" not in os.environ if stop_on_sigterm is None else stop_on_sigterm
        )
        self.check_every_n_steps = check_every_n_steps
        self._requeue_requested = False
        self._requeue_signum = self.signum
        self._terminate_signum = int(signal.SIGTERM)
        self._save_requested = False
        self._terminate_requested = False
        self._interrupt_requested = False
        self._previous: dict[int, Any] = {}
        self._sigterm_outside_training: Any = None
        self._step_at_batch_start = -1
        # From a batch's start until Lightning has logged its step (after the on_train_batch_end hooks, where a
        # stop, or a grid or FID evaluation giving way to one, saves and stops first).
        self._step_unlogged = False
        self._restore_sigterm_broadcast: Callable[[], None] | None = None
        # Ctrl-C, SLURM and torchrun signal every rank: rank 0 says so once (each rank still acts on it).
        self._announces = True

    def _requeue_signums(self) -> list[int]:
        return list(dict.fromkeys([self.signum, *(int(s) for s in requeue_signals())]))

    def _signals(self) -> list[int]:
        signals = list(dict.fromkeys([*self._requeue_signums(), int(signal.SIGTERM)]))
        # SIGHUP unless the run was started ignoring it (nohup): then it goes on ignoring it.
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN and signal.SIGHUP not in signals:
            signals.append(int(signal.SIGHUP))
        # Ctrl-C, where it is Python's own (not ignored, nor handled by another library).
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler and self.signum != signal.SIGINT:
            signals.append(int(signal.SIGINT))
        return signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and signum != self.signum:
            self._interrupt_requested = True
            signal.signal(signum, self._previous.pop(signum))  # a second Ctrl-C stops at once
            self._announce(
                "Ctrl-C: checkpointing at the end of this step (Ctrl-C again to stop at once, keeping only a step "
                "already done)"
            )
            return
        if signum in self._requeue_signums():
            self._requeue_requested = True
            self._requeue_signum = signum
        elif signum == signal.SIGHUP:
            self._terminate_requested = True  # a closed terminal: nothing else will come
            self._terminate_signum = signum
        elif self.stop_on_sigterm:
            self._terminate_requested = True
        else:
            self._save_requested = True
        self._announce(f"received {signal.Signals(signum).name}: checkpointing at the end of this step")

    def _announce(self, line: str) -> None:
        log.log(logging.WARNING if self._announces else logging.DEBUG, line)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Before Lightning installs its own SIGTERM handler (once set-up is done): the handler SIGTERM goes back to
        # when training ends (the run's own stop, submitit's, the default). Lightning's only takes note then, and
        # under DDP broadcasts from rank 0 in a collective the other ranks never join: rank 0 would hang there.
        self._sigterm_outside_training = signal.getsignal(signal.SIGTERM)
        self._announces = trainer.is_global_zero

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning has installed its own handlers (just before the fit loop starts), so these win.
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for signum in self._signals():
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)
        self._restore_sigterm_broadcast = skip_sigterm_broadcast(trainer)

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            if signum == signal.SIGTERM and self._sigterm_outside_training is not None:
                handler = self._sigterm_outside_training
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}
        if self._restore_sigterm_broadcast is not None:
            self._restore_sigterm_broadcast()
            self._restore_sigterm_broadcast = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step_unlogged = False
        # A signal that came after the last step's end was looked at (in its validation) is acted on now, before
        # the final grid and FID; after them, a stop signal is the run's own (run.train: stop at once, one line).
        self._act_on_requests(trainer, every_rank_here=True)
        self._restore_handlers()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._step_at_batch_start = trainer.global_step
        self._step_unlogged = True

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step_unlogged = False  # the step's metrics were logged before its validation

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._step_unlogged = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self._step_at_batch_start:
            return  # accumulating gradients: a checkpoint here would lose the accumulated part
        # Under DDP every rank skips the same steps: the global step is the same on all.
        self._act_on_requests(trainer, every_rank_here=trainer.global_step % self.check_every_n_steps == 0)

    @property
    def stop_requested(self) -> bool:
        """A signal has asked this process to save (and maybe stop): a grid or FID evaluation under way gives way
        to it (callbacks.giving_way), so the checkpoint is not kept waiting past a cluster's grace time."""
        return (
            self._requeue_requested
            or self._save_requested
            or self._terminate_requested
            or self._interrupt_requested
        )

    def save_now(self, trainer: L.Trainer) -> None:
        """Save (and stop, or go on) as the signals received ask, at once: every rank calls it at the same point."""
        self._act_on_requests(trainer, every_rank_here=True)

    def _act_on_requests(self, trainer: L.Trainer, every_rank_here: bool) -> None:
        """Save and stop (or go on) as the signals received ask; under DDP only where `every_rank_here` (all ranks
        make the same call, so they can agree). A stop in a step's on_train_batch_end hooks (its own, or a grid's
        or FID's giving way) logs that step's metrics first: Lightning logs them only after those hooks."""
        requeue, save, terminate = self._requeue_requested, self._save_requested, self._terminate_requested
        interrupt = self._interrupt_requested
        if trainer.world_size > 1:
            if not every_rank_here:
                return
            # Any rank that got the signal stops them all at this same step.
            flags = [requeue, save, terminate, interrupt]
            flags = torch.tensor(flags, dtype=torch.int32, device=trainer.strategy.root_device)
            reduced = trainer.strategy.reduce(flags, reduce_op="sum").tolist()
            requeue, save, terminate, interrupt = (bool(v) for v in reduced)
        if not (requeue or save or terminate or interrupt):
            return
        path = save_step(trainer, self.path)  # every rank takes part
        self._save_requested = False
        if trainer.is_global_zero:
            log.warning("saved %s at step %d", path, trainer.global_step)
        if self._step_unlogged and (requeue or terminate or interrupt):
            log_step_before_stopping(trainer)
        if requeue:
            signum = self._requeue_signum
            raise Preempted(signum, trainer.global_step, path, self._previous.get(signum))
        if terminate:
            raise Preempted(self._terminate_signum, trainer.global_step, path, None)
        if interrupt:
            raise Preempted(int(signal.SIGINT), trainer.global_step, path, None)
