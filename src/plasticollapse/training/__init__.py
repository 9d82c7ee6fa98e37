"""The training layer: what sits between the engines and remedies below and the studies above.

- :mod:`.engine_choice`: the one function that decides which engine runs an online run,
  called by every study's config validation and by :func:`make_engine`, which builds it;
- :mod:`.loop`: :func:`~.loop.run_online`, the one online loop of every online study
  (permuted, the classification streams, bit-flipping regression), with its one state
  type; a study supplies its stream (tasks, passes, measurements, row keys, a stop rule)
  and the loop calls the boundary hooks (``at_task_start``), the engine the per-step ones.

The events at which remedies act, and the one check that a study has those a remedy needs,
are one floor down, with the remedies (:mod:`plasticollapse.remedies.events`).
"""

from plasticollapse.training.engine_choice import (
    ENGINES,
    RunFacts,
    check_engine,
    choose_engine,
    make_engine,
)

__all__ = ["ENGINES", "RunFacts", "check_engine", "choose_engine", "make_engine"]
