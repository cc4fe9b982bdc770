"""Piano-roll rendering: PNGs, legends, shared time axes, empty state, threads."""
from __future__ import annotations

import threading

import pytest
from matplotlib.figure import Figure

from mt3_demo import pianoroll
from mt3_demo.instruments import GM_FAMILIES, instrument_family
from mt3_demo.notes import Note

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def band():
    return [
        Note(0.0, 1.0, 60, program=0),
        Note(1.0, 2.0, 64, program=0),
        Note(0.5, 2.5, 40, program=33),  # Electric Bass (finger)
        Note(2.0, 3.0, 67, program=25),  # Acoustic Guitar (steel)
        Note(3.0, 3.5, 69, program=100, label="Singing Voice"),
        Note(0.0, 0.01, 36, is_drum=True),
        Note(0.5, 0.51, 38, is_drum=True),
        Note(1.0, 1.01, 42, is_drum=True),
    ]


def _size(png: bytes) -> tuple[int, int]:
    # IHDR chunk: width and height as big-endian uint32 right after the signature and chunk header.
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_png_written_and_valid(tmp_path, band):
    path = pianoroll.save_png(band, 4.0, tmp_path / "sub" / "roll.png", title="MT3")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert _size(data) == (900, 360)
    fig = pianoroll.render(band, 4.0, path=tmp_path / "r2.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "r2.png").read_bytes().startswith(PNG_MAGIC)
    assert pianoroll.png_bytes(fig).startswith(PNG_MAGIC)


def test_legend_lists_every_instrument_including_drums(band):
    fig = pianoroll.render(band, 4.0)
    assert pianoroll.legend_labels(fig) == [
        "Acoustic Grand Piano", "Acoustic Guitar (steel)", "Electric Bass (finger)", "Singing Voice", "Drums",
    ]
    assert pianoroll.instruments_in(band) == pianoroll.legend_labels(fig)
    # Counts appear next to the names.
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "Drums · 3" in texts


def test_drums_get_their_own_lane(band):
    fig = pianoroll.render(band, 4.0)
    assert len(fig.axes) == 2  # pitched roll + drum lane
    lane = fig.axes[1]
    assert [t.get_text() for t in lane.get_yticklabels()] == ["Hi-hat", "Snare", "Kick"]
    drums_only = pianoroll.render([n for n in band if n.is_drum], 4.0)
    assert len(drums_only.axes) == 1
    assert pianoroll.legend_labels(drums_only) == ["Drums"]
    pitched_only = pianoroll.render([n for n in band if not n.is_drum], 4.0)
    assert len(pitched_only.axes) == 1


def test_same_time_axis_for_every_model(band):
    # Different note lists of the same 10 s clip share the x axis [0, 10] and the plot position.
    figs = [pianoroll.render(notes, 10.0) for notes in (band, band[:2], [], [band[-1]])]
    for fig in figs:
        for ax in fig.axes:
            assert ax.get_xlim() == (0.0, 10.0)
    positions = {tuple(round(v, 6) for v in fig.axes[0].get_position().bounds[::2]) for fig in figs}
    assert len(positions) == 1  # same left edge and width, so the images line up


def test_time_range_and_missing_duration(band):
    fig = pianoroll.render(band, 10.0, time_range=(1.0, 2.0))
    assert fig.axes[0].get_xlim() == (1.0, 2.0)
    fig = pianoroll.render(band, None)  # falls back to the last offset
    assert fig.axes[0].get_xlim() == (0.0, 3.5)


def test_empty_notes_show_a_message(tmp_path):
    fig = pianoroll.render([], 5.0, title="empty", path=tmp_path / "e.png")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "no notes" in texts
    assert pianoroll.legend_labels(fig) == []
    assert fig.axes[0].get_xlim() == (0.0, 5.0)
    assert (tmp_path / "e.png").read_bytes().startswith(PNG_MAGIC)
    fig = pianoroll.render([], 0.0)  # no duration either: still draws
    assert pianoroll.png_bytes(fig).startswith(PNG_MAGIC)


def test_only_instrument(band):
    fig = pianoroll.render(band, 4.0, only_instrument="Acoustic Grand Piano")
    assert pianoroll.legend_labels(fig) == ["Acoustic Grand Piano"]
    fig = pianoroll.render(band, 4.0, only_instrument="Drums")
    assert pianoroll.legend_labels(fig) == ["Drums"]
    fig = pianoroll.render(band, 4.0, only_instrument="Bass")  # a family name works too
    assert pianoroll.legend_labels(fig) == ["Electric Bass (finger)"]
    fig = pianoroll.render(band, 4.0, only_instrument="Flute")
    assert "no Flute notes" in [t.get_text() for ax in fig.axes for t in ax.texts]


def test_family_colours_fixed_and_distinct():
    families = GM_FAMILIES + ["Drums", "Singing Voice"]
    colours = [pianoroll.family_color(f) for f in families]
    assert len(set(colours)) == len(colours)
    assert all(c.startswith("#") and len(c) == 7 for c in colours)
    assert pianoroll.family_color("Piano") == pianoroll.family_color("Piano")
    assert pianoroll.family_color("Some Custom Label") == pianoroll.family_color("Some Custom Label")
    # The first program of a family is drawn in exactly the family colour.
    assert pianoroll.instrument_color(0) == pianoroll.family_color(instrument_family(0))
    assert pianoroll.instrument_color(0, is_drum=True) == pianoroll.family_color("Drums")


def test_many_instruments_keep_legend_bounded():
    notes = [Note(i * 0.1, i * 0.1 + 0.5, 40 + i, program=i * 4) for i in range(30)]
    fig = pianoroll.render(notes, 5.0)
    labels = pianoroll.legend_labels(fig)
    assert len(labels) == 20 and labels[-1].startswith("+ ")


def test_render_from_two_threads(band, tmp_path):
    errors, outputs = [], {}

    def work(k):
        try:
            notes = band if k % 2 else band[:4]
            outputs[k] = pianoroll.png_bytes(pianoroll.render(notes, 4.0, title=f"t{k % 2}"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(outputs[k].startswith(PNG_MAGIC) for k in range(4))
    # Same input → same picture, even when drawn concurrently.
    assert outputs[1] == outputs[3] and outputs[0] == outputs[2]


def test_agreement_heatmap():
    fig = pianoroll.agreement_heatmap(["mt3", "mr_mt3", "yourmt3"], [[1, 0.5, 0.2], [0.5, 1, 0.3], [0.2, 0.3, 1]])
    assert pianoroll.png_bytes(fig).startswith(PNG_MAGIC)
    assert "0.50" in [t.get_text() for t in fig.axes[0].texts]
    assert pianoroll.png_bytes(pianoroll.agreement_heatmap([], [])).startswith(PNG_MAGIC)
