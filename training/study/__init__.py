"""The study behind ``dae-report``: the reference tutorial's experiments, re-run and extended.

Modules, in the order the report uses them: ``config`` (the sizes of a full or ``--quick`` run),
``zoo`` (which checkpoints the study needs, shipped or trained once into the cache), ``scoring`` (test
sets, noise conditions, memoised mean PSNR/SSIM), the experiments (``experiments``, ``features``,
``iterative``, ``classical`` with its ``bm3d_worker``), ``figures``, ``findings`` (sentences computed from
the numbers), ``markdown`` (tables and sections), ``sections`` (one report section per experiment) and
``log`` (progress lines). ``training.report`` runs them all.
"""
