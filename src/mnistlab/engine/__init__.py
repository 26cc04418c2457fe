"""The engine: Keras names on torch (``layers``, ``optim``), checking a study's calls (``check``),
fitting one run (``fit``) or a same-shape group (``group``), the checkpoint format (``checkpoint``)
and the CPU fast paths (``onednn``, ``fast``). It computes; it does not print or write SQL."""
