"""The research side: how well identification works, measured. Nothing in the product imports it.

The product path is library (``services.library``) -> specifications (``services.specs``) ->
identification (``services.identify``); this package measures it and explains it, for ``bench``
and ``demo`` (``cli``) and the documents in ``docs/evaluation.md``:

- ``metrics``: the paper's protocol on score matrices (ranks, top-k, confusion, gamma sweep);
  numpy only, like ``synthetic`` (a seeded feature world) and ``toy`` (Example 2.1);
- ``benchmark_format``: the benchmark folder on disk (docs/benchmark-format.md);
- ``benchmark``: every method through one ``core.index.SpecIndex``; ``report`` writes JSON,
  Markdown and PNGs; ``weighting_study`` is the evidence behind ``core.scores.DEFAULT_WEIGHTING``;
  ``demo`` the toy and the synthetic benchmark the ``demo`` command shows.

It may import ``core``, ``store``, ``engine`` and ``services`` (heavy libraries only inside
functions); only ``cli`` imports it (``tests/test_layers.py``).
"""
