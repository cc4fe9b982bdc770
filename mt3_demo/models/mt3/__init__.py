"""MT3 (Magenta's official multi-instrument weights): features → T5 → greedy ids → notes.

``adapter.SPEC`` is the registry entry; ``features``, ``vocab``, ``decoding`` and ``notes`` are
reused by MR-MT3.
"""
