"""One run, from spec to record; one job per module.

- :mod:`~kdbench.train.run`: the lease and record life cycle (``train_run``, what executors call);
- :mod:`~kdbench.train.session`: one training session: build, restore, budget, fit, the result;
- :mod:`~kdbench.train.build`: device, data sets, model, method, frozen teacher, optimizer;
- :mod:`~kdbench.train.state`: where a run is, its checkpoint saved and restored;
- :mod:`~kdbench.train.measure`: the measurements a budget is resolved with
  (:mod:`~kdbench.train.budget`: its rules);
- :mod:`~kdbench.train.fit`: the loop: steps, history, evaluation schedule, checkpoints, stops;
- :mod:`~kdbench.train.loop`: one training step; :mod:`~kdbench.train.pipeline`: its batches;
- :mod:`~kdbench.train.evaluation`, :mod:`~kdbench.train.metrics`: the evaluation protocol;
- :mod:`~kdbench.train.context`: attempts and stop requests (set by the executors' signals);
- :mod:`~kdbench.train.environment`: versions, device, host, peak memory of the record.
"""
