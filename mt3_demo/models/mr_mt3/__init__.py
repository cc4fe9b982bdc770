"""MR-MT3, the memory-retaining MT3 (docs/models.md#mr-mt3): what it adds on top of ``models/mt3``.

frontends.py   the ``torchaudio`` / ``torchaudio-legacy`` log-mels (+ MT3's ``tf``) and the clip/scale
               normalisation
checkpoint.py  the registry of published files, the safe Lightning ``.ckpt`` reader, strict loading
model.py       ``MRMT3`` = the shared T5 + the memory block; contiguous (segment-by-segment) decoding
adapter.py     ``SPEC``: resolve / build / the Transcriber
"""
from .adapter import SPEC, MRMT3Transcriber, build, resolve

__all__ = ["SPEC", "MRMT3Transcriber", "build", "resolve"]
