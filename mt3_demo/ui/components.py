"""The page's components, grouped, so handlers can name what they update (built in ``layout``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALL_INSTRUMENTS = "All instruments"


@dataclass
class Card:
    """One model's column: head, piano roll (+ instrument picker), stats, MIDI and stems, listening,
    breakdown."""

    column: Any
    head: Any
    roll: Any
    instrument: Any
    stats: Any
    midi: Any
    synth: Any
    mix: Any
    breakdown: Any
    stems: Any

    def components(self) -> list[Any]:
        return [self.column, self.head, self.roll, self.instrument, self.stats, self.midi, self.synth,
                self.mix, self.breakdown, self.stems]


@dataclass
class Page:
    """Everything a run updates."""

    status: Any
    stop: Any
    original: Any
    report: Any
    comparison: Any
    summary: Any
    scores: Any
    agreement: Any
    state: Any
    cards: list[Card]
    player: Any  # the interactive piano rolls (ui/player.py), one transport for every model

    def outputs(self) -> list[Any]:
        return [self.status, self.stop, self.original, self.report, self.comparison, self.summary, self.scores,
                self.agreement, self.state, self.player, *[c for card in self.cards for c in card.components()]]
