"""``python -m mt3_demo evaluate``: layouts, the result lines, scores against mir_eval, the tables,
resume after a kill, failed files, and the same lines from a Ray cluster.

The datasets are built from the example clips cut to a few seconds (references trimmed to the cut),
scored by transkun (its real weights ship in its wheel) and MT3's tiny test checkpoint.
"""
from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES, FIXTURES
from mt3_demo import cli
from mt3_demo.evaluate import DatasetError, find_dataset
from mt3_demo.evaluate import run as run_mod
from mt3_demo.evaluate.datasets import track_names
from mt3_demo.evaluate.progress import Progress
from mt3_demo.evaluate.tracklog import TrackLog
from mt3_demo.notes import Note, notes_from_midi, write_midi

SECONDS = 3.0
MODELS = "transkun,mt3"


def _cut(stem: str, audio: Path, midi: Path, seconds: float = SECONDS) -> None:
    """The example ``stem`` cut to ``seconds``: its audio (any format soundfile writes) and its
    reference with the notes that start before the cut, ending at the cut at the latest."""
    import soundfile as sf

    x, rate = sf.read(EXAMPLES / f"{stem}.wav", dtype="float32")
    audio.parent.mkdir(parents=True, exist_ok=True)
    sf.write(audio, x[:int(seconds * rate)], rate)
    notes = [Note(n.onset, min(n.offset, seconds), n.pitch, n.velocity, n.program, n.is_drum)
             for n in notes_from_midi(EXAMPLES / f"{stem}.mid") if n.onset < seconds - 0.02]
    write_midi(notes, midi, end_time=seconds)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """Two good pairs (one WAV at the top, one FLAC in a sub-folder with a .midi), one file that is
    not audio, one recording whose MIDI is not MIDI."""
    root = tmp_path_factory.mktemp("pairs")
    _cut("piano_cschumann_polonaise", root / "piano.wav", root / "piano.mid")
    _cut("band_foster_jeanie", root / "sub" / "band.flac", root / "sub" / "band.midi")
    (root / "broken_audio.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    shutil.copy(root / "piano.mid", root / "broken_audio.mid")
    shutil.copy(root / "piano.wav", root / "broken_midi.wav")
    (root / "broken_midi.mid").write_bytes(b"MThd this is not a MIDI file")
    (root / "notes.txt").write_text("not a track")
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """The README's test-weights folder, MT3 only (<dir>/<model_id>/<file>)."""
    root = tmp_path_factory.mktemp("ckpt")
    (root / "mt3").mkdir()
    for name in ("mt3.pth", "config.json"):
        shutil.copy(FIXTURES / "mt3" / "tiny_model" / name, root / "mt3" / name)
    return root


def _evaluate(data: Path, out: Path, checkpoints: Path, *extra: str) -> int:
    return cli.main(["evaluate", str(data), "--models", MODELS, "--out", str(out),
                     "--checkpoints", str(checkpoints), "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def baseline(pairs, checkpoints, tmp_path_factory) -> Path:
    """One uninterrupted local run: what the other runs must reproduce."""
    out = tmp_path_factory.mktemp("baseline")
    assert _evaluate(pairs, out, checkpoints) == cli.EXIT_OK
    return out


def _lines(out: Path) -> list[dict]:
    return [json.loads(t) for t in (out / "tracks.jsonl").read_text().splitlines()]


def _without_timings(lines: list[dict]) -> dict:
    """The lines by (track, model) without what the clock decides."""
    return {(d["track"], d["model"]): {k: v for k, v in d.items() if k != "timings"} for d in lines}


# ------------------------------------------------------------------------------------------------
# Layouts


def test_pairs_layout_recursive_with_names(pairs):
    dataset = find_dataset(pairs)
    assert dataset.layout == "pairs"
    assert [t.rel for t in dataset.tracks] == ["broken_audio.wav", "broken_midi.wav", "piano.wav", "sub/band.flac"]
    assert [t.name for t in dataset.tracks] == ["broken_audio", "broken_midi", "piano", "sub_band"]
    assert dataset.tracks[3].midi.name == "band.midi"
    assert "pairs layout, 4 tracks" in dataset.describe()
    with pytest.raises(DatasetError, match="no splits"):
        find_dataset(pairs, "test")


def test_track_names_stay_unique():
    names = track_names(["a/b.wav", "a_b.flac", "c.wav"])
    assert len(set(names)) == 3 and names[2] == "c"
    assert all(n.startswith("a_b-") for n in names[:2])


def test_slakh_layout_and_splits(tmp_path):
    for split, track in (("test", "Track01877"), ("test", "Track01878"), ("validation", "Track01501")):
        folder = tmp_path / split / track
        folder.mkdir(parents=True)
        (folder / "mix.flac").write_bytes(b"x")
        (folder / "all_src.mid").write_bytes(b"x")
    (tmp_path / "test" / "Track09999").mkdir()  # no mix: not a track
    everything = find_dataset(tmp_path)
    assert everything.layout == "slakh" and len(everything.tracks) == 3
    test = find_dataset(tmp_path, "test")
    assert [t.rel for t in test.tracks] == ["test/Track01877/mix.flac", "test/Track01878/mix.flac"]
    assert test.tracks[0].midi == tmp_path / "test" / "Track01877" / "all_src.mid"
    assert test.tracks[0].name == "test_Track01877_mix"
    with pytest.raises(DatasetError, match="no split 'train'"):
        find_dataset(tmp_path, "train")


def test_maestro_layout(tmp_path):
    rows = [("test", "2004/a.wav", "2004/a.midi"), ("train", "2004/b.wav", "2004/b.midi"),
            ("test", "2006/c.wav", "2006/c.midi")]
    with (tmp_path / "maestro-v3.0.0.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["canonical_composer", "canonical_title", "split", "year", "midi_filename",
                    "audio_filename", "duration"])
        for split, audio, midi in rows:
            w.writerow(["X", "Y", split, 2004, midi, audio, 1.0])
    dataset = find_dataset(tmp_path, "test")  # the files need not be there: missing ones fail when evaluated
    assert dataset.layout == "maestro"
    assert [t.rel for t in dataset.tracks] == ["2004/a.wav", "2006/c.wav"]
    assert len(find_dataset(tmp_path).tracks) == 3
    with pytest.raises(DatasetError, match="no split 'dev'"):
        find_dataset(tmp_path, "dev")


def test_no_dataset_is_refused_in_one_sentence(tmp_path, capsys, checkpoints):
    (tmp_path / "song.wav").write_bytes(b"x")  # audio without a reference
    assert _evaluate(tmp_path, tmp_path / "out", checkpoints) == cli.EXIT_AUDIO
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "holds no dataset" in err[0]
    assert _evaluate(tmp_path / "missing", tmp_path / "out", checkpoints) == cli.EXIT_AUDIO
    assert "is not a folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# One run


def test_every_pair_has_a_line_and_its_midi(baseline, pairs):
    lines = _lines(baseline)
    keys = {(d["track"], d["model"]) for d in lines}
    assert len(lines) == len(keys) == 8
    assert keys == {(t.rel, m) for t in find_dataset(pairs).tracks for m in MODELS.split(",")}
    for d in lines:
        if d["track"].startswith("broken"):
            continue
        assert "error" not in d, d.get("error")
        assert set(d["scores"]) == {"onset", "onset_offset", "program_aware", "drums", "counts"}
        assert {"detection", "family_detection", "leaked", "missed"} <= set(d["instruments"])
        assert d["timings"]["inference_s"] > 0 and d["audio_seconds"] == pytest.approx(SECONDS, abs=1e-3)
        name = d["track"].rsplit(".", 1)[0].replace("/", "_")
        assert d["midi"] == f"midi/{d['model']}/{name}.mid"
        assert (baseline / d["midi"]).is_file()


def test_unreadable_files_are_recorded_as_failed(baseline):
    by_key = {(d["track"], d["model"]): d for d in _lines(baseline)}
    for model in MODELS.split(","):
        audio = by_key[("broken_audio.wav", model)]
        assert audio["error_kind"] == "audio" and "broken_audio.wav" in audio["error"]
        midi = by_key[("broken_midi.wav", model)]
        assert midi["error_kind"] == "reference" and "broken_midi.mid" in midi["error"]
        assert "scores" not in audio and not (baseline / "midi" / model / "broken_audio.mid").exists()


def _mir_eval_prf(est: list, ref: list, with_offsets: bool) -> dict:
    """Precision, recall, F1 straight from mir_eval: drums against drums (onset only), pitched
    against pitched (the flat scores' groups), matches summed."""
    import mir_eval

    def arrays(notes):
        iv = np.array([[n.start, max(n.end, n.start + 0.01)] for n in notes]).reshape(-1, 2)
        return iv, mir_eval.util.midi_to_hz(np.array([n.pitch for n in notes], dtype=float))

    matched = 0
    for drums in (False, True):
        e = [n for n, d in est if d == drums]
        r = [n for n, d in ref if d == drums]
        if e and r:
            (ri, rp), (ei, ep) = arrays(r), arrays(e)
            matched += len(mir_eval.transcription.match_notes(
                ri, rp, ei, ep, onset_tolerance=0.05, pitch_tolerance=50.0,
                offset_ratio=0.2 if with_offsets and not drums else None, offset_min_tolerance=0.05))
    p = matched / len(est) if est else 0.0
    r = matched / len(ref) if ref else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def test_scores_equal_mir_eval_on_the_written_midi(baseline, pairs):
    import pretty_midi

    def notes(path):
        return [(n, inst.is_drum) for inst in pretty_midi.PrettyMIDI(str(path)).instruments for n in inst.notes]

    checked = 0
    for d in _lines(baseline):
        if "error" in d:
            continue
        est = notes(baseline / d["midi"])
        ref = notes(next(t.midi for t in find_dataset(pairs).tracks if t.rel == d["track"]))
        assert d["scores"]["counts"]["est"] == len(est) and d["scores"]["counts"]["ref"] == len(ref)
        for name, offsets in (("onset", False), ("onset_offset", True)):
            expected = _mir_eval_prf(est, ref, offsets)
            # The written MIDI holds times on its tick grid (1/440 s): a match decided within a tick of
            # a tolerance's edge may differ; none does on these tracks, so the counts agree exactly.
            assert d["scores"][name] == pytest.approx(expected, abs=1e-12), (d["track"], d["model"], name)
        checked += 1
    assert checked == 4


def test_table_means_are_the_means_of_the_lines(baseline):
    lines = [d for d in _lines(baseline) if "error" not in d]
    rows = {(r["model"], r["metric"]): r for r in csv.DictReader(io.StringIO((baseline / "table.csv").read_text()))}
    for model in MODELS.split(","):
        for metric, get in (("onset_f1", lambda d: d["scores"]["onset"]["f1"]),
                            ("program_aware_f1", lambda d: d["scores"]["program_aware"]["f1"]),
                            ("instrument_detection_f1", lambda d: d["instruments"]["detection"]["f1"])):
            values = [get(d) for d in lines if d["model"] == model]
            row = rows[(model, metric)]
            assert int(row["n"]) == len(values) == 2
            assert float(row["mean"]) == math.fsum(values) / len(values)
            assert float(row["std"]) == pytest.approx(float(np.std(values)), abs=1e-15)
        # drums count only where the reference has drums: the band, not the piano
        drums = [d["scores"]["drums"]["f1"] for d in lines if d["model"] == model and d["track"] == "sub/band.flac"]
        assert float(rows[(model, "drums_f1")]["mean"]) == drums[0] and rows[(model, "drums_f1")]["n"] == "1"
        assert rows[(model, "tracks_failed")]["mean"] == "2"
        assert (model, "family_f1:Piano") in rows and (model, "family_f1:Drums") in rows
    table = (baseline / "table.md").read_text()
    assert "| Onset F1 |" in table and "F1 per instrument family" in table
    assert (baseline / "f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_says_what_produced_the_folder(baseline, pairs):
    s = json.loads((baseline / "summary.json").read_text())
    assert s["data"] == str(pairs.resolve()) and s["layout"] == "pairs" and s["split"] is None
    assert s["models"] == ["transkun", "mt3"] and s["complete"] is True
    assert set(s["options"]) == {"transkun", "mt3"} and s["options"]["mt3"]["load"]["compat"] == "magenta"
    assert s["counts"] == {"transkun": {"tracks": 4, "failed": 2}, "mt3": {"tracks": 4, "failed": 2}}
    assert s["created"] and s["finished"] >= s["created"]


def test_other_options_into_the_same_folder_are_refused(baseline, pairs, checkpoints, capsys):
    before = (baseline / "tracks.jsonl").read_bytes()
    assert _evaluate(pairs, baseline, checkpoints, "--compat", "kunato") == cli.EXIT_USAGE
    assert "with other options" in capsys.readouterr().err
    assert (baseline / "tracks.jsonl").read_bytes() == before


# ------------------------------------------------------------------------------------------------
# Resume


def test_a_killed_run_resumes_where_it_stopped(baseline, pairs, checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "out"
    append = TrackLog.append

    def killed_after_first(self, line):
        append(self, line)
        raise KeyboardInterrupt  # Ctrl-C right after the first line is on disk

    monkeypatch.setattr(TrackLog, "append", killed_after_first)
    assert _evaluate(pairs, out, checkpoints) == 130
    first = _lines(out)
    assert len(first) == 1 and not (out / "table.md").exists()
    with (out / "tracks.jsonl").open("a") as f:  # a second line cut off by the kill mid-write
        f.write('{"track": "piano.wav", "model": "transk')
    monkeypatch.setattr(TrackLog, "append", append)

    calls = []
    evaluate_track = run_mod.evaluate_track

    def spy(track, model_id, *args, **kwargs):
        calls.append((track.rel, model_id))
        return evaluate_track(track, model_id, *args, **kwargs)

    monkeypatch.setattr(run_mod, "evaluate_track", spy)
    assert _evaluate(pairs, out, checkpoints) == cli.EXIT_OK
    done_first = (first[0]["track"], first[0]["model"])
    assert done_first not in calls and len(calls) == 7
    lines = _lines(out)
    assert len(lines) == 8  # the cut line is gone, the first is kept once
    assert _without_timings(lines) == _without_timings(_lines(baseline))
    for name in ("table.md", "table.csv", "f1.png"):
        assert (out / name).read_bytes() == (baseline / name).read_bytes(), name
    for midi in sorted((baseline / "midi").rglob("*.mid")):
        assert (out / midi.relative_to(baseline)).read_bytes() == midi.read_bytes()

    calls.clear()  # and a third run has nothing left to do
    assert _evaluate(pairs, out, checkpoints) == cli.EXIT_OK and calls == []
    assert (out / "table.csv").read_bytes() == (baseline / "table.csv").read_bytes()


def test_retry_failed_evaluates_only_the_failures_again(baseline, pairs, checkpoints, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(baseline, out)
    calls = []
    evaluate_track = run_mod.evaluate_track
    monkeypatch.setattr(run_mod, "evaluate_track",
                        lambda track, m, *a, **k: calls.append((track.rel, m)) or evaluate_track(track, m, *a, **k))
    assert _evaluate(pairs, out, checkpoints, "--retry-failed") == cli.EXIT_OK
    assert sorted(calls) == sorted((t, m) for t in ("broken_audio.wav", "broken_midi.wav") for m in MODELS.split(","))
    assert (out / "table.csv").read_bytes() == (baseline / "table.csv").read_bytes()


def test_progress_line_counts_and_estimates():
    stream = io.StringIO()
    progress = Progress(4, stream, skipped=1)
    progress.update("transkun", "a.wav", True)
    progress.update("transkun", "b.wav", False)
    text = stream.getvalue().splitlines()
    assert text[0].startswith("evaluate: 1/4 tracks (1 already done)") and "ETA" in text[0]
    assert "2/4 tracks, 1 failed" in text[1] and text[1].endswith("transkun b.wav failed")


# ------------------------------------------------------------------------------------------------
# Ray


def test_ray_gives_the_local_lines(baseline, pairs, checkpoints, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        assert _evaluate(pairs, out, checkpoints, "--ray") == cli.EXIT_OK
    finally:
        ray.shutdown()
    assert _without_timings(_lines(out)) == _without_timings(_lines(baseline))
    for name in ("table.md", "table.csv", "f1.png"):
        assert (out / name).read_bytes() == (baseline / name).read_bytes(), name
    assert json.loads((out / "summary.json").read_text())["execution"]["ray"] is True


# ------------------------------------------------------------------------------------------------
# The page's Leaderboard tab


def test_leaderboard_shows_the_folder(baseline, tmp_path):
    gr = pytest.importorskip("gradio")
    from mt3_demo.ui import leaderboard

    text = leaderboard.leaderboard_markdown(baseline)
    assert "pairs layout" in text and "`mt3`" in text and "| Onset F1 |" in text and "finished" in text
    assert "No evaluation" in leaderboard.leaderboard_markdown(tmp_path)
    with gr.Blocks() as demo:
        leaderboard.add_tab(demo, None)
    assert not any(getattr(b, "label", None) == "Leaderboard" for b in demo.blocks.values())
    with gr.Blocks() as demo:
        leaderboard.add_tab(demo, str(baseline))
    assert any(getattr(b, "label", None) == "Leaderboard" for b in demo.blocks.values())


def test_family_scores_split_the_program_aware_matches():
    from mt3_demo.metrics import family_scores, score

    ref = [Note(0.0, 0.5, 60, program=0), Note(1.0, 1.5, 64, program=1), Note(0.0, 0.5, 40, program=33),
           Note(0.5, 0.51, 36, is_drum=True)]
    est = [Note(0.01, 0.5, 60, program=0), Note(1.0, 1.5, 64, program=0), Note(0.0, 0.5, 40, program=40),
           Note(0.52, 0.6, 36, is_drum=True)]
    families = family_scores(est, ref)
    assert list(families) == ["Bass", "Drums", "Piano"]  # the reference's families; Strings (40) leaked
    assert families["Piano"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "est": 2, "ref": 2}
    assert families["Bass"]["est"] == 0 and families["Bass"]["f1"] == 0.0
    assert families["Drums"]["f1"] == 1.0
    matched = sum(round(f["recall"] * f["ref"]) for f in families.values())
    assert matched == round(score(est, ref)["program_aware"]["recall"] * len(ref))


def test_the_page_has_a_leaderboard_tab_beside_transcribe_only_with_a_folder(baseline):
    gr = pytest.importorskip("gradio")
    from mt3_demo.manager import ModelManager
    from mt3_demo.options import Settings
    from mt3_demo.ui.layout import build_demo

    def tab_labels(settings):
        demo = build_demo(ModelManager(settings=settings), settings)
        return [b.label for b in demo.blocks.values() if isinstance(b, gr.Tab)]

    with_board = tab_labels(Settings(leaderboard=str(baseline)))
    assert "Transcribe" in with_board and "Leaderboard" in with_board
    assert with_board.index("Transcribe") < with_board.index("Leaderboard")  # the demo stays the first tab
    without = tab_labels(Settings())
    assert "Leaderboard" not in without and "Transcribe" not in without


def test_each_line_and_the_table_name_the_weights(baseline):
    """Issue 24 item 3 for datasets: the tiny checkpoints' table must not read as the official model's."""
    ok = [d for d in _lines(baseline) if "error" not in d]
    assert ok and all(d["weights"].startswith("test: ") for d in ok if d["model"] != "transkun")
    table = (baseline / "table.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| Weights |"))
    assert "test: " in row
