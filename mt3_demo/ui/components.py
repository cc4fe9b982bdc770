"""The page's components, grouped, so handlers can name what they update (built in ``layout``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Card:
    """One model's column: head (state, weights, progress), stats, MIDI and stems, breakdown. Its
    piano roll and its audio are in the player, under the page's one transport."""

    column: Any
    head: Any
    stats: Any
    midi: Any
    stems: Any
    breakdown: Any
    fold: Any  # the breakdown's accordion: shown only for a model with notes

    def components(self) -> list[Any]:
        return [self.column, self.head, self.stats, self.midi, self.stems, self.breakdown, self.fold]


@dataclass
class Page:
    """Everything a run updates."""

    status: Any
    stop: Any
    report: Any
    comparison: Any
    summary: Any
    scores: Any
    agreement: Any
    state: Any
    cards: list[Card]
    player: Any  # the interactive piano rolls (ui/player.py), one transport for every model and the original

    def outputs(self) -> list[Any]:
        return [self.status, self.stop, self.report, self.comparison, self.summary, self.scores,
                self.agreement, self.state, self.player, *[c for card in self.cards for c in card.components()]]

    def summary_outputs(self) -> list[Any]:
        """What Stop fills in from the models that had finished (their cards are filled already)."""
        return [self.status, self.stop, self.report, self.comparison, self.summary, self.scores, self.agreement,
                self.player, *[card.head for card in self.cards]]
