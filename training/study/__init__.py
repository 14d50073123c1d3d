"""The study behind ``dae-report``: the reference tutorial's experiments, re-run and extended.

Modules, in the order the report uses them: ``config`` (the sizes and seeds of a full or ``--quick`` run),
``zoo`` (which checkpoints the study needs, each with several training seeds, shipped or trained once into
the cache; ``level_aware`` trains the one model ``dae-train`` cannot), ``scoring`` (test sets, noise
conditions, memoised per-image PSNR/SSIM; ``eval_noises`` adds the corruptions no model is trained on),
``stats`` (paired-bootstrap intervals and the wording of claims), the experiments (``experiments``,
``features``, ``iterative``, ``classical`` with its ``bm3d_worker``), ``figures``, ``findings`` (sentences
computed from the numbers), ``markdown`` (tables and sections), ``sections`` (one report section per
experiment), the later sections in their own modules (``blindness``, ``universal``, ``cost``) and ``log``
(progress lines). ``training.report`` runs them all.
"""
