"""``python -m mt3_demo evaluate``: every model over a dataset, the papers' table from one command.

* :mod:`.datasets` — which layout a folder has (folder of pairs, Slakh2100, MAESTRO) and its tracks;
* :mod:`.track` — one (track, model): transcribe, score, one result line;
* :mod:`.tracklog` — ``tracks.jsonl``, appended and fsynced line by line, read back on resume;
* :mod:`.run` — what is left to do, doing it here (one model at a time), the aggregates, summary;
* :mod:`.cluster` — the same on a Ray cluster (``--ray``; Ray is imported only there);
* :mod:`.table` — ``table.md``, ``table.csv``, ``f1.png``;
* :mod:`.progress` — the terminal's progress line.
"""
from .datasets import Dataset, DatasetError, Track, find_dataset
from .run import EvaluateError, Evaluation, ManagerRecipe, RayPlan, evaluate

__all__ = ["Dataset", "DatasetError", "EvaluateError", "Evaluation", "ManagerRecipe", "RayPlan", "Track",
           "evaluate", "find_dataset"]
