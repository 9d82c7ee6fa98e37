"""Shared machinery of the online classification streams (``label_permuted``,
``random_labels``, ``class_incremental``).

A stream study is a folder with a ``Config`` inheriting :class:`.config.StreamConfig` (its
source's constants as defaults), a stream class (task t: training samples, held-out split,
classes present; :mod:`.stream`), and one-line ``run``/``summary``/``report`` modules that
hand them to the shared parts:

* :mod:`.config`: the fields every stream has (data, network, training, the opt-in probes);
* :mod:`.stream`: :class:`~.stream.StreamTask`, the data loading, seeded draws;
* :mod:`.model`: the MLP with its source's initialisation, and the masked head of
  class-incremental streams;
* :mod:`.run`: the streams' side of the one online loop (measurement,
  checkpoints, resume);
* :mod:`.measure`: collapse on training and held-out data, per hidden layer, and the
  probes (plasticity score, retrained baseline, forgetting);
* :mod:`.summary` and :mod:`.report`: summary.json, the sweep's table, the report section.
"""
