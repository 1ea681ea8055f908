"""hparams_search's sweeper: Hydra's Optuna sweeper, with a search whose every trial failed ending in one line
(difflab.run.search_failed). Hydra takes a sweeper only from the hydra_plugins package, hence its place."""

from __future__ import annotations

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class Search(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        try:
            return super().sweep(arguments)
        except ValueError as error:
            # optuna's best_trial, asked once the trials have run, when none of them completed
            if "No trials are completed yet" not in str(error):
                raise
        from difflab.run.search_failed import every_trial_failed

        every_trial_failed(self.sweeper.config, self.sweeper.job_idx)
