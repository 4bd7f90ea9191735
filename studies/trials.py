"""What a trial is called and how it ended, shared by the Optuna searcher, MLflow and the terminal.

Ray Tune knows trials by hex ids; users know them by Optuna's trial number (what optuna-dashboard
shows). The searcher below records, in the driver process, which Optuna trial each Tune trial is,
so the MLflow run can be named ``t03 lora r16 lr=1e-3`` and tagged with the number.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from ray.tune.search.optuna import OptunaSearch

__all__ = ["ChemtuneOptunaSearch", "optuna_trial", "ran_out", "stopped_early", "trial_name", "CHEMTUNE_RESULT_KEYS"]

logger = logging.getLogger(__name__)

# Tune trial id -> the Optuna trial asked for it (driver process only; the callbacks run there too).
_OPTUNA_TRIALS: dict[str, Any] = {}


def optuna_trial(trial_id: str) -> Any | None:
    """The ``optuna.Trial`` behind a Tune trial of this driver, or None (a trial restored from disk)."""
    return _OPTUNA_TRIALS.get(trial_id)


def stopped_early(result: Mapping[str, Any] | None, max_epochs: int) -> bool:
    """Whether a completed trial was stopped by ASHA: it ended before ``max_epochs`` without the
    test evaluation the tasks run once, after their last epoch (a patience stop still tests)."""
    result = result or {}
    epochs = int(result.get("training_iteration") or result.get("epoch") or 0)
    return epochs < max_epochs and not any(str(k).startswith("test_") for k in result)


def ran_out(last_result: Mapping[str, Any] | None, errored: bool) -> bool:
    """Whether a Tune trial ended for good: it errored past its retries, or its last result is ``done`` (its
    last epoch, an ASHA stop, a patience stop). One stopped by a Ctrl-C is TERMINATED too, but not ``done``."""
    return errored or bool((last_result or {}).get("done"))


# Keys a chemtune task reports that are not scores but still worth a chart.
CHEMTUNE_RESULT_KEYS = ("epoch", "train_loss", "n_train_rows", "samples_per_s", "trainable_params", "total_params")


def _short(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            mantissa, exponent = f"{value:.0e}".split("e")
            return f"{mantissa}e{int(exponent)}"
        return f"{value:.3g}"
    return str(value)


def trial_name(number: int | None, config: Mapping[str, Any]) -> str:
    """A readable run name, e.g. ``t03 lora r16 lr=1e-3``: the number, the categorical choices
    (method, treatment, selection), a LoRA rank, then the learning rate."""
    parts = [f"t{number:02d}" if number is not None else "t?"]
    for key in ("method", "treatment", "selection"):
        if isinstance(config.get(key), str):
            parts.append(config[key])
    uses_lora = "lora" in f"{config.get('method', '')} {config.get('treatment', '')}"
    for key in ("lora_r", "lora_rank"):
        if uses_lora and config.get(key) is not None:
            parts.append(f"r{config[key]}")
    if isinstance(config.get("lr"), (int, float)) and math.isfinite(config["lr"]):
        parts.append(f"lr={_short(float(config['lr']))}")
    if isinstance(config.get("gamma"), (int, float)):
        parts.append(f"gamma={_short(config['gamma'])}")
    return " ".join(parts)


class ChemtuneOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, plus: remembers each Tune trial's Optuna trial, and tells Optuna that a
    trial ASHA stopped early is PRUNED (Ray's searcher reports it COMPLETE with a partial value, so
    Optuna's best trial could be one that never finished).

    A multi-objective study passes lists as ``metric`` and ``mode`` (the study's metric first, then its costs):
    Optuna's sampler then searches their Pareto front; ASHA still stops trials on the first alone.

    Args:
        max_epochs: The study's epochs (ASHA's ``max_t``), to tell an ASHA stop from a finished trial.
        **kwargs: ``OptunaSearch``'s arguments.
    """

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs

    def _setup_study(self, mode: str | list[str]) -> None:
        super()._setup_study(mode)
        if isinstance(self._metric, list) and self._ot_study.metric_names is None:  # axes of the Pareto plot
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning
                self._ot_study.set_metric_names(list(self._metric))

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if trial_id in self._ot_trials:
            _OPTUNA_TRIALS[trial_id] = self._ot_trials[trial_id]
        return config

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # A resumed driver's restored trials were asked by the dead one: without this, one that had not started
        # yet got its MLflow run here named "t?", with no Optuna number and no mlflow_run_id on its Optuna trial.
        _OPTUNA_TRIALS.update(self._ot_trials)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error and trial_id not in self._completed_trials and stopped_early(result, self.max_epochs):
            from optuna.trial import TrialState

            ot_trial = self._ot_trials[trial_id]
            # Tune skips the searcher for the result that got the trial stopped: report it here, so
            # the pruned epoch shows in Optuna's intermediate values.
            # (a multi-objective study has no intermediate values: Optuna refuses report())
            value = None if isinstance(self.metric, list) else result.get(self.metric)
            step = result.get("training_iteration")
            if isinstance(value, (int, float)) and step is not None and int(step) not in ot_trial.storage.get_trial(
                    ot_trial._trial_id).intermediate_values:
                ot_trial.report(float(value), int(step))
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        if result and not error and isinstance(self.metric, list) and trial_id not in self._completed_trials:
            missing = [m for m in self.metric if not isinstance(result.get(m), (int, float))]
            if missing:  # Ray would tell None among the values, which Optuna refuses (the trial stayed RUNNING)
                from optuna.trial import TrialState

                logger.warning("trial %s reported no %s: told Optuna it FAILED", trial_id, ", ".join(missing))
                self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.FAIL)
                self._completed_trials.add(trial_id)
                return
        super().on_trial_complete(trial_id, result=result, error=error)
