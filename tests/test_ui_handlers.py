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
    return Page(*[comp() for _ in range(9)], cards, FakePlayer())


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

    state = PageState(names=["A", "B"], results={0: ModelResult("a", "A")})
    update = handlers.stop_page(page, state)
    assert "Stopped" in update[page.status]
    assert "stopped" in update[page.cards[1].head] and page.cards[0].head not in update


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
    assert "Nothing transcribed" in update[page.status]
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
    assert update[page.status] == "**Could not transcribe:** a options: max_tokens must be at least 1, not 0."
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
