"""hparams_search's sweeper: Hydra's Optuna sweeper, with a search whose every trial failed ending in one line
(difflab.run.search_failed), and a study kept in storage searched again from new points. Hydra takes a sweeper only from the hydra_plugins package, hence its place."""

from __future__ import annotations

import logging

from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger("difflab")


class Search(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        self._draw_anew_for_a_kept_study()
        try:
            return super().sweep(arguments)
        except ValueError as error:
            # optuna's best_trial, asked once the trials have run, when none of them completed
            if "No trials are completed yet" not in str(error):
                raise
        from difflab.run.search_failed import every_trial_failed

        every_trial_failed(self.sweeper.config, self.sweeper.job_idx)

    def _draw_anew_for_a_kept_study(self) -> None:
        """A study kept in storage (hydra.sweeper.storage=sqlite:///…) and searched again: its sampler, seeded as
        configured, would draw the first search's points again (the same random start-up trials). So the seed is
        offset by the number of trials the study holds, which keeps a repeated sequence of searches repeatable."""
        impl = self.sweeper
        sampler = impl.config.hydra.sweeper.get("sampler")
        if impl.storage is None or impl.study_name is None or sampler is None or sampler.get("seed") is None:
            return  # nothing kept, or a new study each time (no name), or an unseeded sampler: fresh draws already
        import optuna  # here, not at start-up: Hydra imports every hydra_plugins module to find its plugins

        try:
            held = len(optuna.load_study(study_name=impl.study_name, storage=impl.storage).trials)
        except KeyError:  # no such study yet
            return
        if held:
            impl.sampler = instantiate(sampler, seed=int(sampler.seed) + held)
            log.info(
                "study %s holds %d trials: its sampler is seeded with %d, not %d, so as not to draw them again",
                impl.study_name, held, int(sampler.seed) + held, int(sampler.seed),
            )  # fmt: skip
