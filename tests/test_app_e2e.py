"""End to end: launch the Gradio app in-process on a free port and drive its ``/transcribe`` API
with gradio_client — a bad upload gets a clear error, and the app keeps answering with a real
transcription by the embedded default (transkun) of a short example clip."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from conftest import running_app

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples_audio"
PIANO = EXAMPLES / "piano_cschumann_polonaise"
CLIP_SECONDS = 6.0  # the CPU is slow and shared: a short clip keeps the run to a few seconds


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The app, launched once for the module, with Gradio's files in a private temp dir."""
    with running_app(tmp_path_factory.mktemp("gradio")) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    c = Client(app_url, verbose=False)
    yield c
    c.close()


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """The first seconds of the piano example (mono 44.1 kHz WAV)."""
    import soundfile as sf

    audio, rate = sf.read(str(PIANO.with_suffix(".wav")), dtype="float32")
    path = tmp_path_factory.mktemp("clips") / "piano_first6s.wav"
    sf.write(str(path), audio[: int(CLIP_SECONDS * rate)], rate)
    return path


def _call(client, audio: Path, models=("transkun",), reference: Path | None = None):
    from gradio_client import handle_file

    return client.predict(handle_file(str(audio)), list(models),
                          handle_file(str(reference)) if reference else None, api_name="/transcribe")


def test_api_is_listed(client):
    assert "/transcribe" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]


@pytest.mark.parametrize("content, expected", [
    # audio.py's messages: text named .wav is "not an audio file", whatever its name says.
    (b"this is plain text, not a recording\n" * 20, ("not an audio file",)),
    (b"", ("empty",)),
], ids=["text-renamed-wav", "empty-file"])
def test_bad_upload_gives_clear_error(client, tmp_path, content, expected):
    """Answered by the validator, before the request joins the queue (issue 13.6)."""
    from gradio_client.exceptions import ValidationError

    bad = tmp_path / "recording.wav"
    bad.write_bytes(content)
    with pytest.raises(ValidationError) as info:
        _call(client, bad)
    message = str(info.value)
    assert any(e in message.lower() for e in expected), message
    assert "recording.wav" in message  # names the user's file
    assert "Traceback" not in message


def test_no_model_selected_gives_clear_error(client, short_clip):
    from gradio_client.exceptions import ValidationError

    with pytest.raises(ValidationError, match="at least one model"):
        _call(client, short_clip, models=())


def test_model_that_cannot_run_here_is_refused_before_the_queue(client, short_clip):
    """Offline without weights, MT3 cannot load: one sentence, no download retries, no queue."""
    from gradio_client.exceptions import ValidationError

    with pytest.raises(ValidationError, match="cannot run here") as info:
        _call(client, short_clip, models=("mt3",))
    assert "Traceback" not in str(info.value)


def test_transcribes_example_after_a_bad_upload(client, short_clip, tmp_path):
    """A bad upload first (in this test, whatever ran before): the app stays up and transcribes."""
    import pretty_midi
    from gradio_client.exceptions import ValidationError

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(ValidationError):
        _call(client, bad)
    midis, pngs, results, report = _call(client, short_clip, reference=PIANO.with_suffix(".mid"))

    assert len(midis) == 1 and len(pngs) == 1
    midi = pretty_midi.PrettyMIDI(midis[0])
    assert sum(len(i.notes) for i in midi.instruments) > 0
    assert Path(pngs[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    entry = results["models"]["transkun"]
    assert entry["stats"]["total"] > 0
    assert entry["timings"]["rtf"] > 0
    assert entry["timings"]["inference_s"] > 0
    assert results["audio_seconds"] == pytest.approx(CLIP_SECONDS, abs=0.01)
    # The reference covers the whole piece, the clip only its start: precision is the fair check.
    assert entry["scores"]["onset"]["precision"] > 0.8
    assert results["agreement"]["models"] == ["transkun"]
    assert results["audio"] == short_clip.name  # a file name, not the server's upload path

    with zipfile.ZipFile(report) as zf:
        names = zf.namelist()
        assert any(n.endswith(".mid") for n in names)
        assert any(n.endswith(".png") for n in names)
        assert any(n.endswith("summary.md") for n in names)
        bundled = json.loads(zf.read(next(n for n in names if n.endswith("results.json"))))
    assert bundled["models"]["transkun"]["stats"]["total"] == entry["stats"]["total"]


def test_api_options_reach_the_model_and_bad_ones_are_refused(client, short_clip):
    """Issue 20: ``/transcribe`` takes each model's decode options as JSON (optional: the calls above
    give none); they are checked by the CLI's rules before the queue, and change no loaded weights."""
    from gradio_client import handle_file
    from gradio_client.exceptions import ValidationError

    def call(options: str):
        return client.predict(handle_file(str(short_clip)), ["transkun"], None, options, api_name="/transcribe")

    _, _, results, _ = call('{"transkun": {"hop_s": 8}}')
    assert results["models"]["transkun"]["hop_s"] == 8.0  # the run's own account of its windows
    _, _, results, _ = call("")
    assert results["models"]["transkun"]["hop_s"] == 12.0  # the default again
    for bad, message in [('{"transkun": {"hop_s": -1}}', "hop_s must be a positive number of seconds"),
                         ('{"transkun": {"max_tokens": 8}}', "unknown option 'max_tokens'"),
                         ("{", "options must be a JSON object")]:
        with pytest.raises(ValidationError, match=message) as info:
            call(bad)
        assert "Traceback" not in str(info.value)


def test_a_client_that_leaves_does_not_keep_its_run(app_url, tmp_path):
    """Issue 13.6: a client that disconnects mid-run used to leave its job running for the next
    user to wait behind. Gradio closes the run's generator; the model stops at its next segment
    and the run writes no results."""
    import threading
    import time

    import httpx

    from mt3_demo.options import read_env
    from mt3_demo.runs import runs_root as runs_root_in

    runs_root = lambda: runs_root_in(read_env()[0].upload_dir)  # noqa: E731 - the app's (running_app's env)

    config = httpx.get(app_url + "config").json()
    fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "transcribe")
    wav = PIANO.with_suffix(".wav")  # 20 s: several segments, so there is a boundary to stop at
    with open(wav, "rb") as f:
        uploaded = httpx.post(app_url + "gradio_api/upload", files={"files": (wav.name, f, "audio/wav")}).json()[0]
    before = set(runs_root().iterdir())
    session = "leaver0001"
    audio = {"path": uploaded, "orig_name": wav.name, "meta": {"_type": "gradio.FileData"}}
    joined = httpx.post(app_url + "gradio_api/queue/join", json={
        "data": [audio, ["transkun"], None, ""], "fn_index": fn_index, "session_hash": session,  # "": no options
        "event_data": None, "trigger_id": None})
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", app_url + f"gradio_api/queue/data?session_hash={session}", timeout=120) as stream:
        for line in stream.iter_lines():  # wait until the run is under way, then hang up
            if '"process_generating"' in line:
                break
    workers = lambda: [t for t in threading.enumerate() if t.name == "mt3-demo-run"]  # noqa: E731
    deadline = time.monotonic() + 300
    while workers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not workers(), "the run of a client that left is still going"
    new = set(runs_root().iterdir()) - before
    assert len(new) == 1
    assert not (next(iter(new)) / "results.json").exists()  # stopped before the end
