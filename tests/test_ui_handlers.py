"""The page's handlers without a browser: a bad request is refused by the validator (before the
queue), a run reports phases in its card, closing the run (Stop, a client gone) stops the model at
its next segment, errors are said once in one sentence, and no report is offered when nothing ran."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import torch

from conftest import EXAMPLES
from mt3_demo.audio import Clip
from mt3_demo.manager import ModelManager
from mt3_demo.models.base import AdapterOutput, ModelSpec
from mt3_demo.notes import Note, Transcription
from mt3_demo.options import Settings
from mt3_demo.results import ModelResult, Run
from mt3_demo.ui import handlers, render
from mt3_demo.ui.components import Card, Page

SEGMENTS = 200


@dataclass(frozen=True)
class SlowOptions:
    pass


class SlowTranscriber:
    """Walks many short segments, reporting each: a run long enough to be stopped."""

    def __init__(self, device):
        self.device, self.dtype = device, torch.float32
        self.reached = 0

    def num_segments(self, clip, decode=None):
        return SEGMENTS

    def transcribe(self, clip, decode=None, progress=None):
        for i in range(SEGMENTS):
            time.sleep(0.02)
            self.reached = i + 1
            if progress:
                progress(i + 1, SEGMENTS)
        return AdapterOutput(notes=[Note(0.0, 0.5, 60)])


def slow_manager() -> tuple[ModelManager, list[SlowTranscriber]]:
    built: list[SlowTranscriber] = []

    def build(location, device, options):
        built.append(SlowTranscriber(device))
        return built[-1]

    spec = ModelSpec(id="slow", display_name="Slow", description="", source="", licence="", instruments="",
                     size_mb=1.0, options_type=SlowOptions, decode_type=SlowOptions,
                     resolve=lambda c, o, f, s: Path("/nowhere"), build=build)
    return ModelManager(device=torch.device("cpu"), budget_mb=100.0, specs={"slow": spec}), built


def fake_page(n_cards: int = 1) -> Page:
    names = iter(range(10_000))

    def comp() -> str:
        return f"component-{next(names)}"

    cards = [Card(*[comp() for _ in range(len(fields(Card)))]) for _ in range(n_cards)]
    return Page(*[comp() for _ in range(8)], cards, FakePlayer())


class FakePlayer:
    """Stands in for the player component: files stay where they are."""

    def move_resource_to_block_cache(self, path):
        return path


def run_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mt3-demo-run"]


@pytest.fixture
def gradio_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))


def test_validator_refuses_bad_inputs_with_their_message(tmp_path):
    manager = ModelManager(device=torch.device("cpu"), settings=Settings(hub_offline=True))
    bad = tmp_path / "recording.wav"
    bad.write_text("not audio")
    audio, models, reference = handlers.validate_inputs(manager, 600.0, str(bad), [], str(bad))
    assert audio["is_valid"] is False and "recording.wav" in audio["message"]
    assert models["is_valid"] is False and "at least one model" in models["message"]
    assert reference["is_valid"] is False and "reference MIDI" in reference["message"]
    good = handlers.validate_inputs(manager, 600.0, str(EXAMPLES / "piano_cschumann_polonaise.wav"),
                                    ["transkun"], str(EXAMPLES / "piano_cschumann_polonaise.mid"))
    assert all(v["is_valid"] for v in good)
    # Offline without weights MT3 cannot load: refused with one sentence, not after download retries.
    _, unusable, _ = handlers.validate_inputs(manager, 600.0, None, ["mt3"], None)
    assert unusable["is_valid"] is False and "cannot run here" in unusable["message"]


def test_upload_note_says_what_was_uploaded(tmp_path):
    ok = handlers.check_upload(str(EXAMPLES / "piano_cschumann_polonaise.wav"), 600.0)
    assert "Ready" in ok and "19.5 s" in ok
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert "empty" in handlers.check_upload(str(empty), 600.0)
    assert "up to 10 min" in handlers.check_upload(None, 600.0)  # before an upload: what it may be


def test_run_reports_phases_in_its_card_and_finishes(gradio_tmp, tone_wav):
    manager, built = slow_manager()
    page = fake_page()
    updates = list(handlers.transcribe_page(page, manager, 600.0, str(tone_wav()), ["slow"], None))
    heads = [u[page.cards[0].head] for u in updates if page.cards[0].head in u]
    phases = [h for h in heads if "card-progress" in h]
    assert any("Loading weights" in h for h in phases) or any("segment 1 of" in h for h in phases)
    assert any(f"segment 2 of {SEGMENTS}" in h or "left" in h for h in phases)
    assert "1 note " in heads[-1] or "1 note ·" in heads[-1]  # "1 note", not "1 notes"
    final = updates[-1]
    assert "Done" in final[page.status]
    assert final[page.report]["visible"] is True
    assert built[0].reached == SEGMENTS


def test_closing_the_run_stops_the_model(gradio_tmp, tone_wav):
    """What Stop (``cancels=``) and a vanished client do: Gradio closes the generator."""
    manager, built = slow_manager()
    page = fake_page()
    run = handlers.transcribe_page(page, manager, 600.0, str(tone_wav()), ["slow"], None)
    for update in run:
        if "segment 3 of" in str(update.get(page.cards[0].head, "")):
            break
    run.close()
    deadline = time.monotonic() + 30
    while run_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not run_threads()
    assert built[0].reached < SEGMENTS  # stopped at a segment boundary, not run to the end
    # The model is free again: the next run goes through.
    updates = list(handlers.transcribe_page(page, manager, 600.0, str(tone_wav()), ["slow"], None))
    assert "Done" in updates[-1][page.status]


def test_stop_marks_unfinished_cards():
    page = fake_page(2)
    from mt3_demo.ui.session import PageState

    state = PageState(names=["A", "B"], results={0: ModelResult("a", "A", error="failed")})
    update = handlers.stop_page(page, state)
    assert "Stopped" in update[page.status] and "No model had finished" in update[page.status]
    assert "stopped" in update[page.cards[1].head] and page.cards[0].head not in update
    assert page.report not in update  # nothing finished: no report


def test_stop_shows_what_had_finished(gradio_tmp, tone_wav):
    """Stopped during the second model: the first one's player roll, tabs and report are offered."""
    from mt3_demo.ui import session

    manager, _ = slow_manager()
    manager.specs["slow2"] = manager.specs["slow"]
    page = fake_page(2)
    audio = str(tone_wav())
    run = handlers.transcribe_page(page, manager, 600.0, audio, ["slow", "slow2"], None)
    state = None
    for update in run:
        state = update.get(page.state, state) if not isinstance(update.get(page.state), dict) else state
        if "segment 3 of" in str(update.get(page.cards[1].head, "")):
            break
    run.close()
    assert isinstance(state, session.PageState) and list(state.results) == [0]
    update = handlers.stop_page(page, state)
    assert "Stopped" in update[page.status] and "Finished before the stop: Slow" in update[page.status]
    assert "stopped" in update[page.cards[1].head] and page.cards[0].head not in update
    assert update[page.report]["visible"] is True and Path(update[page.report]["value"]).is_file()
    assert update[page.comparison]["visible"] is True and "Slow" in update[page.summary]
    import json

    payload = json.loads(update[page.player])
    assert [r["id"] for r in payload["rolls"]] == ["slow"]
    assert [s["id"] for s in payload["sources"]][0] == "original"
    deadline = time.monotonic() + 30
    while run_threads() and time.monotonic() < deadline:
        time.sleep(0.05)


def _run(results: list[ModelResult]) -> Run:
    clip = Clip.from_array(torch.zeros(16000).numpy())
    return Run(clip, results, None, None, {}, [], [])


def test_an_error_is_one_sentence_with_details_folded():
    message = ("mt3: checkpoint mt3.pth unavailable — offline mode. To fix: put the file at "
               "$MT3_DEMO_CHECKPOINTS/mt3/mt3.pth.")
    head = render.card_head("MT3", "error", message)
    sentence = head.split('<p class="card-error">')[1].split("</p>")[0]
    assert "To fix" not in sentence and sentence.endswith(".")
    assert "<details>" in head and "MT3_DEMO_CHECKPOINTS" in head.split("<details>")[1]


def test_no_report_when_nothing_was_transcribed():
    page = fake_page()
    failed = ModelResult("mt3", "MT3", error="Weights not on this machine; offline mode is on.")
    update = handlers.summary_update(page, _run([failed]), "")
    assert update[page.report]["visible"] is False and update[page.report]["value"] is None
    assert "Nothing transcribed:</b> the model could not run (see the card)." in update[page.status]
    assert page.player not in update  # no player for nothing
    two = handlers.summary_update(page, _run([failed, ModelResult("a", "A", error="No.")]), "")
    assert "no model could run (see the cards)." in two[page.status]
    assert "failed (see its card)" in update[page.summary]
    assert "offline" not in update[page.summary]  # the reason is said once, in the card


def test_one_sentence_keeps_its_own_end():
    from mt3_demo.availability import sentence  # a CheckpointError's reason, as the page shows it
    from mt3_demo.ui.render import _sentence_and_details as split_fix  # the card's display of a stored error

    assert sentence("mt3: x.pth could not be read; is it corrupt?", "mt3") == "X.pth could not be read; is it corrupt?"
    assert split_fix("x.pth could not be read; is it corrupt?") == ("X.pth could not be read; is it corrupt?", "")
    assert split_fix("Gone. To fix: put it back.") == ("Gone.", "put it back.")


def test_best_only_where_it_beats_another_model():
    assert render._best_cells([[0.0, 0.5], [0.0, 0.7]]) == {(1, 2)}  # a column of ties has no best
    assert render._best_cells([[0.9, 0.5]]) == set()  # one model: nothing to beat
    assert render.plural(1, "note") == "1 note" and render.plural(2, "note") == "2 notes"


def test_done_detail_and_jargon_titles():
    t = Transcription(model_id="x", notes=[Note(0.0, 0.5, 60)], audio_seconds=1.0, load_seconds=0.1,
                      inference_seconds=0.5, device="cpu", dtype="float32", info={"trim": "magenta"})
    result = ModelResult("x", "X", transcription=t)
    assert render.done_detail(result).startswith("1 note ·")
    stats = render.stats_html(result)
    assert 'title="real-time factor' in stats and "What do these mean?" in stats
    assert f'title="{render.esc(render.GLOSSARY["trim"])}"' in stats


def test_api_run_of_a_vanished_client_stops(gradio_tmp, tone_wav):
    """Gradio closes a generator whose client disconnected; the API's run then stops too."""
    manager, built = slow_manager()
    run = handlers.transcribe_api(manager, 600.0, str(tone_wav()), ["slow"], None)
    next(run)
    while built[0].reached < 3 if built else True:
        next(run)
    run.close()
    deadline = time.monotonic() + 30
    while run_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not run_threads()
    assert built[0].reached < SEGMENTS
    *_, (midis, pngs, results, zip_path) = handlers.transcribe_api(manager, 600.0, str(tone_wav()), ["slow"], None)
    assert results["models"]["slow"]["stats"]["total"] == 1


def test_results_name_their_weights_and_empty_or_late_notes():
    """Issue 24: the weights on the card and in the tables (test weights unmistakable); "no notes"
    instead of "0 notes"; notes starting after the recording are counted on the card."""
    from mt3_demo import writers

    late = [Note(0.5, 0.9, 60), Note(1.2, 1.4, 62), Note(1.0, 1.1, 64)]  # the clip is 1 s long
    t = Transcription(model_id="mt3", notes=late, audio_seconds=1.0, weights="test: mt3.pth")
    result = ModelResult("mt3", "MT3", transcription=t)
    head = render.card_head("MT3", "done", render.done_detail(result), weights=t.weights)
    assert 'class="badge weights-test"' in head and "test weights: mt3.pth (untrained)" in head
    assert "these notes are noise" in head
    assert "2 notes start after the end of the recording" in render.stats_html(result)
    assert render.model_cell(result) == "MT3 · test weights: mt3.pth (untrained)"
    run = _run([result])
    assert "test weights: mt3.pth" in render.summary_html(run)
    assert writers.test_weights_warning(run.results).startswith("Test weights: MT3 ran")
    assert "Test weights: MT3" in writers.summary_markdown(run)

    empty = ModelResult("transkun", "Transkun", transcription=Transcription(
        model_id="transkun", notes=[], audio_seconds=1.0, weights="official (pip package)"))
    assert render.done_detail(empty).startswith("no notes ·")
    assert "No notes" in render.stats_html(empty) and "after the end" not in render.stats_html(empty)
    assert render.weights_text("official (pip package)") == "official weights (pip package)"
    assert render.weights_text("yours: my.ckpt") == "your checkpoint: my.ckpt"
    assert writers.test_weights_warning([empty]) == ""
    page = fake_page()
    update = handlers.card_update(page.cards[0], empty)
    assert update[page.cards[0].midi]["visible"] is False and update[page.cards[0].stems]["visible"] is False


def test_no_notes_writes_no_stems_or_silent_audio(tmp_path):
    from mt3_demo import writers

    clip = Clip.from_array(torch.zeros(16000).numpy())
    files, method = writers.write_model_files([], clip, tmp_path, "empty", "Empty")
    assert sorted(files) == ["midi", "png"] and method is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mid", "empty.png"]


# ------------------------------------------------------------------------------------------------
# Issue 20: per-request decode options from the page's "Advanced" sections and the API's JSON


def _tone(path: Path) -> str:
    import numpy as np
    import soundfile as sf

    sf.write(path, (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000)
    return str(path)


def test_advanced_controls_start_at_each_models_defaults():
    import gradio as gr

    from mt3_demo.ui import advanced

    manager = ModelManager(device=torch.device("cpu"))
    with gr.Blocks():
        adv = advanced.controls(manager)
    assert {("mt3", "max_tokens"), ("mt3", "trim"), ("mr_mt3", "stop_at_eos"), ("yourmt3", "batch_size"),
            ("transkun", "hop_s")} <= set(adv.fields)
    assert not [f for f in adv.fields if f[1] == "cuda_graphs"]  # the operator's, not the page's
    assert len(adv.components) == len(adv.fields)
    decode = advanced.decode(manager, adv, [c.value for c in adv.components])
    assert decode == {m: manager.spec(m).decode_type() for m in decode} and set(decode) <= set(manager.model_ids())


def test_advanced_options_reach_the_model_without_a_reload(tmp_path):
    from test_manager import FakeDecode, fake_spec, make_manager

    from mt3_demo.ui import advanced

    manager = make_manager([fake_spec("a")], settings=Settings(upload_dir=tmp_path / "gradio"))
    wav = _tone(tmp_path / "tone.wav")
    adv = advanced.Advanced(components=["max-tokens control"], fields=[("a", "max_tokens")])
    page = fake_page()
    list(handlers.transcribe_page(page, manager, 600.0, wav, ["a"], None, decode=adv.values([64])))
    list(handlers.transcribe_page(page, manager, 600.0, wav, ["a"], None, decode=adv.values([8])))
    list(handlers.transcribe_page(page, manager, 600.0, wav, ["a"], None, decode=adv.values([None])))  # empty
    transcriber, _ = manager.get("a")
    assert transcriber.decoded_with == [FakeDecode(64), FakeDecode(8), FakeDecode()]
    assert manager.load_count == {"a": 1}
    # A bad value: the validator says it at its control, and the run itself refuses with the same sentence.
    (check,) = advanced.checks(manager, adv, [0])
    assert check == {"__type__": "validate", "is_valid": False, "message": "a options: max_tokens must be at least 1, "
                                                                          "not 0."}
    (update,) = list(handlers.transcribe_page(page, manager, 600.0, wav, ["a"], None, decode=adv.values([0])))
    assert "Could not transcribe:" in update[page.status]
    assert "a options: max_tokens must be at least 1, not 0." in update[page.status]
    assert len(transcriber.decoded_with) == 3


def test_api_options_json_reaches_the_model_and_bad_json_is_a_sentence(tmp_path):
    import gradio as gr
    from test_manager import FakeDecode, fake_spec, make_manager

    manager = make_manager([fake_spec("a")], settings=Settings(upload_dir=tmp_path / "gradio"))
    wav = _tone(tmp_path / "tone.wav")
    *_, (midis, _, results, _) = handlers.transcribe_api(manager, 600.0, wav, ["a"], None,
                                                         options='{"a": {"max_tokens": 64}}')
    transcriber, _ = manager.get("a")
    assert transcriber.decoded_with == [FakeDecode(64)] and results["models"]["a"]["notes"]
    for bad, message in [('{"a": {"max_tokens": 0}}', "a options: max_tokens must be at least 1, not 0."),
                         ('{"a": {"max_token": 8}}', "a options: unknown option 'max_token'; known: max_tokens."),
                         ('{"b": {}}', "options name an unknown model 'b'; known: a."),
                         ('[1]', "options must be a JSON object of model ids, not list."),
                         ('{"a": ', "options must be a JSON object like")]:
        with pytest.raises(gr.Error) as e:
            list(handlers.transcribe_api(manager, 600.0, wav, ["a"], None, options=bad))
        assert str(e.value.message).startswith(message) and "Traceback" not in str(e.value.message)
        assert handlers.check_options(manager, bad)["is_valid"] is False  # the validator, before the queue
    assert handlers.check_options(manager, "")["is_valid"] and handlers.check_options(manager, None)["is_valid"]
    assert len(transcriber.decoded_with) == 1 and manager.load_count == {"a": 1}


def test_a_page_where_no_model_can_run_offers_nothing_to_press_and_says_why():
    """A Ray cluster that cannot be reached (or any reason shared by every model): Transcribe is off
    and says so, and the idle status names the reason and the fix; one usable model turns it back on."""
    from test_manager import fake_spec, make_manager

    from mt3_demo.ui import handlers

    down = ("The Ray cluster at 10.0.0.1:6379 cannot be reached.", "start it (ray start --head)")
    manager = make_manager([fake_spec("a", resolve_error=down), fake_spec("b", resolve_error=down)])
    choices, listing, _header, run, status, *panels = handlers.refresh_page(manager, None, [])
    assert choices["choices"] == [] and panels == []
    assert run["interactive"] is False and run["value"] == "No model can run here"
    assert "No model can run here right now." in status and "10.0.0.1:6379 cannot be reached" in status
    assert "To fix: start it (ray start --head)" in status and 'class="status error"' in status
    assert "cannot be reached" in listing

    # Different reasons: the status points at the list, which has each.
    mixed = make_manager([fake_spec("a", resolve_error=down), fake_spec("b", resolve_error=("No weights.", "get them"))])
    _, listing, _, run, status, *_ = handlers.refresh_page(mixed, None, [])
    assert run["interactive"] is False and "Not available here" in status
    assert "No weights." in listing and "cannot be reached" in listing

    # One model that can run: Transcribe, on; the usual idle status.
    some = make_manager([fake_spec("a", resolve_error=down), fake_spec("b")])
    choices, _, _, run, status, *_ = handlers.refresh_page(some, None, [])
    assert [v for _, v in choices["choices"]] == ["b"]
    assert run == {"__type__": "update", "value": "Transcribe", "interactive": True}
    assert "Pick an example" in status and "error" not in status


def test_advanced_panels_of_models_that_cannot_run_are_hidden(tmp_path):
    import gradio as gr

    from mt3_demo.ui import advanced, handlers

    # Offline with an empty checkpoints folder: only transkun (weights in its wheel) can run.
    manager = ModelManager(device=torch.device("cpu"), settings=Settings(checkpoints_root=tmp_path, hub_offline=True))
    avail = manager.availabilities()
    assert avail["transkun"].usable and not avail["mt3"].usable
    with gr.Blocks():
        adv = advanced.controls(manager, avail)
    assert adv.panels["transkun"].visible and not adv.panels["mt3"].visible
    ids = list(adv.panels)
    _, _, _, run, _, *updates = handlers.refresh_page(manager, None, ids)
    assert {m: u["visible"] for m, u in zip(ids, updates)} == {m: avail[m].usable for m in ids}
    assert run["interactive"] is True
