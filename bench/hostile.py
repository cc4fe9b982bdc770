"""Hostile reference MIDI files for the app benchmarks (issue 21), built as raw bytes in memory.

``dense_reference(n, seconds)``: n notes spread evenly over ``seconds`` (120 bpm, 480 ticks per
beat), pitches cycling over the piano's 88 keys — the densest reference of that many notes a
visitor can send for a recording of that length. ``n = mt3_demo.reference.MAX_NOTES`` is the
largest the app accepts; 1 000 000 notes is the file that once took a server from 1.4 to 8.6 GB.
"""
from __future__ import annotations

import struct


def _varlen(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def dense_reference(notes: int, seconds: float) -> bytes:
    ticks_per_second = 960  # 480 ticks per beat at 120 bpm
    step = max(2, int(seconds * ticks_per_second / notes))
    on, off = _varlen(step - 1), _varlen(1)
    body = bytearray(b"\x00\x90\x15\x64" + b"\x01\x15\x00")  # the first note: on, and off a tick later
    for i in range(1, notes):
        pitch = 21 + i % 88
        body += on + bytes([pitch, 100]) + off + bytes([pitch, 0])  # running status: note-on, velocity 0 = off
    body += b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(body)) + bytes(body)
