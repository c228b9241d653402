"""Trial ↔ train: the only place that knows both Optuna and the training loop.

Outcomes, each recorded on the trial as user attributes `outcome` and `reason` (hpo.trials.OUTCOME_STATES gives
the Optuna state each one ends in):
  complete     trained to the end; value = final validation accuracy
  pruned       stopped by the pruner
  diverged     loss became NaN/inf
  time_cap     past the per-trial wall-time cap (with the curve so far)
  param_cap    model over the parameter cap; not trained (no curve)
  memory_cap   over budget.memory_mb: refused on its estimate before training, or stopped when its
               measured peak passes the cap after an epoch
  crashed      an unexpected exception (the study carries on)
  interrupted  Ctrl-C or a stopped worker
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import optuna
import torch

from hpo.data import Splits
from hpo.search.samplers import percent_steps
from hpo.search.study import load_data
from hpo.search.studyfile import StudyConfig
from hpo.training.diagnostics import trial_attrs
from hpo.training.loop import train
from hpo.training.memory import PeakMemory, estimate_bytes
from hpo.training.models import build_model, count_params
from hpo.training.runtime import TrainResult
from hpo.training.spec import TrainConfig
from hpo.trials import CONFIRM_SEED, CONFIRM_SPLIT


def measure_latency_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int = 30) -> float:
    """Median wall time of a batch-1 forward pass, after warm-up, on x's device. CUDA runs kernels
    asynchronously: each timing waits for them (synchronize), or it would time the launch only."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    model.eval()
    with torch.inference_mode():
        sample = x[:1]
        for _ in range(5):
            model(sample)
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(sample)
            sync()
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


class MemoryCap(optuna.TrialPruned):
    """Raised from the epoch callback when a trial's measured memory passes budget.memory_mb."""

    outcome = "memory_cap"


class TrialNoteWriter(Protocol):
    """Writes a trial's note as its outcome becomes known (hpo.results.notes.TrialNotes)."""

    def write(self, trial: optuna.Trial, state: str, value: float | None) -> None: ...


class StudyNotes(Protocol):
    """What a study run writes for optuna-dashboard (hpo.results.notes.DashboardNotes): the search calls it and
    knows nothing of notes, pictures or matplotlib. Picklable, for worker processes."""

    def bind(self, url: str | None) -> StudyNotes: ...
    def missing_pictures(self, url: str) -> str | None: ...
    def trial_notes(self, paper) -> TrialNoteWriter: ...
    def live(self) -> Callable: ...


@dataclass
class TrialRun:
    """One admitted trial on its way through training: its config, model and what its epochs reported."""

    trial: optuna.Trial
    tc: TrainConfig
    model: torch.nn.Module
    n_params: int
    meter: PeakMemory | None = None
    cap: int | None = None  # budget.memory_mb in bytes
    curve: list[float] = field(default_factory=list)
    t0: float = 0.0  # when training started


class Objective:
    """The Optuna objective: one trial = one training run of the configuration the space suggests.

    `train_fn` is the training loop (hpo.training.loop.train); the benchmark passes a timed wrapper of it.
    `notes`: writes each trial's dashboard note as it ends (hpo study passes one; None writes none)."""

    def __init__(self, cfg: StudyConfig, data: Splits, *, threads: int | None = None, space=None,
                 train_fn: Callable[..., TrainResult] | None = None, notes: TrialNoteWriter | None = None,
                 resplit: Callable[[int], Splits] | None = None):
        self.cfg, self.data = cfg, data
        # A confirmation run's validation split (hpo.search.confirm), made once per split seed when first needed.
        self.resplit = resplit or self._load_split
        self.splits = {cfg.split_seed: data}
        self.space = space or cfg.space
        self.threads = threads or cfg.budget.threads
        self.train_fn = train_fn or train
        self.notes = notes

    def __call__(self, trial: optuna.Trial):
        values, state = None, "crashed"
        try:
            tc = self.configure(trial)
            values = self.train_one(self.admit(trial, tc))
            state = "complete"
            return values
        except optuna.TrialPruned:
            state = "pruned"
            raise
        except KeyboardInterrupt:  # Ctrl-C or a stopped worker: Optuna marks the trial FAIL; say why
            self.interrupted(trial)
            state = "interrupted"
            raise
        except Exception as e:  # recorded, then re-raised so Optuna marks the trial FAIL and logs it
            self.crashed(trial, e)
            raise
        finally:  # the outcome is known and the trial still runs (a finished one takes no artifact)
            try:
                self.note(trial, state, values)
            except KeyboardInterrupt:  # Ctrl-C while the note was written: Optuna fails the trial; say why
                self.interrupted(trial)
                raise

    def note(self, trial: optuna.Trial, state: str, values=None) -> None:
        """The trial's dashboard note; `state` is complete, pruned, interrupted or crashed (a pruned trial's
        recorded outcome, e.g. diverged or time_cap, is what the note says)."""
        if self.notes is None:
            return
        if state == "pruned":
            state = trial.user_attrs.get("outcome") or "pruned"
        value = None if values is None else values if isinstance(values, float) else values[0]
        self.notes.write(trial, state, value)

    # The steps of one trial, also taken one by one for the members of a pack (hpo.search.pack_runner).

    def _load_split(self, seed: int) -> Splits:
        return load_data(replace(self.cfg, split_seed=seed))

    def data_for(self, trial: optuna.Trial) -> Splits:
        """The split a trial trains and is scored on: the study's, or a confirmation run's own."""
        seed = trial.user_attrs.get(CONFIRM_SPLIT)
        if seed is None:
            return self.data
        if seed not in self.splits:
            self.splits[seed] = self.resplit(seed)
        return self.splits[seed]

    def configure(self, trial: optuna.Trial) -> TrainConfig:
        """Draw the trial's configuration and record it (and which machine and process runs it). A confirmation
        run's split is made here, before admit() starts measuring the trial's memory."""
        self.data_for(trial)
        hp = self.space.suggest(trial)
        # A space may draw the seed (a replicate factor); a confirmation run (hpo.search.confirm) brings its own.
        confirm_seed = trial.user_attrs.get(CONFIRM_SEED)
        tc = TrainConfig(**{"seed": self.cfg.seed, **hp, **({} if confirm_seed is None else {"seed": confirm_seed})})
        trial.set_user_attr("config", tc.to_dict(active_only=True))  # momentum only where it is used, etc.
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        return tc

    def admit(self, trial: optuna.Trial, tc: TrainConfig, *, measure_memory: bool = True) -> TrialRun:
        """Build the model and refuse it (TrialPruned, outcome param_cap or memory_cap) when it is over a cap.
        measure_memory=False: the caller measures memory itself (a pack measures all its members at once)."""
        budget = self.cfg.budget
        cap = budget.memory_mb * 2**20 if budget.memory_mb else None
        # Started before the model is built: the model's memory is the trial's too.
        meter = PeakMemory(budget.device).start() if cap and measure_memory else None
        model = build_model(tc, self.data.input_shape, self.data.n_classes)
        n_params = count_params(model)
        trial.set_user_attr("n_params", n_params)
        trial.set_user_attr("io", [self.data.train_x.shape[1], self.data.n_classes])  # how trial lines write it
        if budget.max_params and n_params > budget.max_params:
            self._stop(trial, "param_cap", f"{n_params} parameters exceed the cap of {budget.max_params}; not trained")
        if cap:
            need = estimate_bytes(model, optimizer=tc.optimizer, batch_size=tc.batch_size,
                                  in_features=self.data.train_x.shape[1], n_train=len(self.data.train_x),
                                  n_eval=len(self.data.eval_x), augment=tc.augment, augment_shift=tc.augment_shift)
            if need > cap:
                self._stop(trial, "memory_cap", f"needs an estimated {need / 2**20:.1f} MiB (parameters, gradients, "
                                                f"{tc.optimizer} state, batch-{tc.batch_size} activations), over the "
                                                f"{budget.memory_mb} MiB cap; not trained")
        return TrialRun(trial, tc, model, n_params, meter, cap)

    def on_epoch(self, run: TrialRun, meter: PeakMemory | None = None,
                 cap: int | None = None) -> Callable[[int, float], None]:
        """The epoch callback: records the curve, stops the trial over the memory cap, reports to the pruner.
        Raises TrialPruned (or MemoryCap) to stop training."""
        meter = meter if meter is not None else run.meter
        cap = cap if cap is not None else run.cap
        multi = len(self.cfg.objectives) > 1
        confirm_seed = run.trial.user_attrs.get(CONFIRM_SEED)

        def on_epoch(epoch: int, acc: float) -> None:
            run.curve.append(acc)
            if meter is not None and meter.growth() > cap:
                raise MemoryCap(f"memory grew by {meter.growth() / 2**20:.1f} MiB by the end of epoch {epoch}, "
                                f"over the {cap // 2**20} MiB cap")
            if multi:  # Optuna does not prune multi-objective studies; keep the curve in user attrs
                return
            steps = percent_steps(epoch, run.tc.epochs) if self.cfg.pruner_step == "percent" else [epoch]
            for step in steps:
                run.trial.report(acc, step)
            if steps and confirm_seed is None and run.trial.should_prune():  # a confirmation run trains to its end
                raise optuna.TrialPruned(f"pruned after epoch {epoch} at {acc:.4f}")

        return on_epoch

    def train_one(self, run: TrialRun):
        """Train one trial alone; returns its value(s), or raises TrialPruned."""
        run.t0 = time.perf_counter()
        try:
            r = self.train_fn(run.tc, self.data_for(run.trial), threads=self.threads,
                              max_seconds=self.cfg.budget.trial_timeout, on_epoch=self.on_epoch(run), model=run.model)
        except optuna.TrialPruned as e:
            self.stopped(run, e, run.model)
            raise
        return self.finish(run, r)

    def stopped(self, run: TrialRun, e: optuna.TrialPruned, model: torch.nn.Module) -> None:
        """Record a trial that the pruner or the memory cap stopped during training."""
        trial = run.trial
        trial.set_user_attr("outcome", getattr(e, "outcome", "pruned"))
        trial.set_user_attr("reason", str(e))
        trial.set_user_attr("epochs_trained", len(run.curve))
        trial.set_user_attr("val_curve", [round(a, 5) for a in run.curve])
        trial.set_user_attr("train_seconds", round(time.perf_counter() - run.t0, 3))
        self._diagnose(trial, model)

    def finish(self, run: TrialRun, r: TrainResult):
        """Record a trained run; its value(s), or TrialPruned when it diverged or hit the time cap."""
        trial = run.trial
        self._record(trial, r)
        self._diagnose(trial, r.model)
        if r.status != "complete":
            self._stop(trial, r.status, r.reason)
        trial.set_user_attr("outcome", "complete")
        trial.set_user_attr("reason", "")
        values = {"accuracy": r.eval_acc, "params": float(run.n_params)}
        if "latency" in self.cfg.objectives:
            values["latency"] = measure_latency_ms(r.model, self.data_for(trial).eval_x)
            trial.set_user_attr("latency_ms", round(values["latency"], 4))
        if len(self.cfg.objectives) == 1:
            return values["accuracy"]
        return tuple(values[o] for o in self.cfg.objectives)

    def interrupted(self, trial: optuna.Trial) -> None:
        trial.set_user_attr("outcome", "interrupted")
        trial.set_user_attr("reason", "stopped by Ctrl-C or SIGTERM")

    def crashed(self, trial: optuna.Trial, e: BaseException) -> None:
        trial.set_user_attr("outcome", "crashed")
        trial.set_user_attr("reason", f"{type(e).__name__}: {e}")

    def _stop(self, trial: optuna.Trial, outcome: str, reason: str):
        """Record `outcome`, one that prunes the trial (OUTCOME_STATES), and stop the trial."""
        trial.set_user_attr("outcome", outcome)
        trial.set_user_attr("reason", reason)
        raise optuna.TrialPruned(reason)

    def _record(self, trial: optuna.Trial, r: TrainResult) -> None:
        trial.set_user_attr("epochs_trained", r.epochs)
        trial.set_user_attr("train_seconds", round(r.train_seconds, 3))
        trial.set_user_attr("samples_per_sec", round(r.samples_per_sec, 1))
        trial.set_user_attr("val_curve", [round(a, 5) for a in r.eval_curve])
        trial.set_user_attr("loss_curve", [round(v, 5) for v in r.loss_curve])

    def _diagnose(self, trial: optuna.Trial, model: torch.nn.Module) -> None:
        """dead_units per hidden layer (one pass over the validation data) and, for mix layers, mix_p."""
        for k, v in trial_attrs(model, self.data_for(trial).eval_x).items():
            trial.set_user_attr(k, v)
