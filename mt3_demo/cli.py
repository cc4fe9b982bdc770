"""Command line: ``python -m mt3_demo {transcribe,compare,evaluate,models}``.

Exit codes: 0 success · 2 usage error · 3 bad audio input · 4 checkpoint problem · 1 model failure.
Errors print one line on stderr, never a traceback: not ours, not a library's, not a log record's,
and no library warnings (``--debug`` or ``MT3_DEMO_DEBUG=1`` shows them all).

This is one of the two doors (with ``app.py``): the environment is read here, once, into
:class:`~mt3_demo.options.Settings`, the flags applied over it, and everything below gets it.
Flags become each model's load options and decode options (``mt3_demo.options``); every flag is
checked for every model, also where no chosen model uses it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import warnings
from pathlib import Path

from . import writers
from .audio import AudioError, load_clip
from .checkpoints import CheckpointError
from .manager import ModelManager, manager_for, parse_device
from .reference import ReferenceError, fit, read_reference
from .options import BACKENDS, OptionError, Settings, model_options, settings_from_env
from .pipeline import run_models, transcribe_one
from .writers import OutputError

EXIT_OK, EXIT_MODEL, EXIT_USAGE, EXIT_AUDIO, EXIT_CHECKPOINT = 0, 1, 2, 3, 4
EXIT_CODES = {"checkpoint": EXIT_CHECKPOINT, "audio": EXIT_AUDIO, "options": EXIT_USAGE}  # pipeline error kinds


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model options (each model uses the ones that apply to it)")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: $MT3_DEMO_DEVICE, else cuda when available)")
    g.add_argument("--max-tokens", type=int, help="decode at most N tokens per segment (token models)")
    g.add_argument("--trim", help="MT3, MR-MT3: how a segment's ids end — 'magenta' or 'kunato' "
                                  "(default: MT3 its compat mode's, MR-MT3 kunato)")
    g.add_argument("--batch-size", type=int, help="segments decoded together (default: by device)")
    g.add_argument("--compat", help="MT3: 'magenta' (default, what the weights were trained with) or "
                                    "'kunato' (the port)")
    g.add_argument("--frontend", help="MR-MT3: tf, torchaudio or torchaudio-legacy "
                                      "(default: the one the checkpoint was trained with)")
    g.add_argument("--memory-length", type=int, help="MR-MT3: memory length N (default from the registry)")
    g.add_argument("--checkpoint-name", help="pick a known published checkpoint of the model by name")
    g.add_argument("--precision", help="auto, fp32, fp16 or bf16: CUDA precision (default auto: fp32; "
                                       "always fp32 on CPU). Half precision changes greedy ids, and for MT3 "
                                       "and MR-MT3 (autocast, no CUDA graph) it ran slower than fp32 on an H200")
    g.add_argument("--max-seconds", type=float,
                   help="reject audio longer than this (default $MT3_DEMO_MAX_SECONDS, else 600)")


def _add_backend(p) -> None:
    p.add_argument("--backend", choices=BACKENDS,
                   help="where the models run: local (this process, the default) or ray (the deployments of the "
                        "Ray Serve cluster at $RAY_ADDRESS, default auto; docs/scaling.md); default $MT3_DEMO_BACKEND")


# CLI flag -> options field; each model takes the fields it has (mt3_demo.options.model_options).
LOAD_FLAGS = ("compat", "frontend", "memory_length", "checkpoint_name", "precision")  # a reload
DECODE_FLAGS = ("max_tokens", "trim", "batch_size")  # per request
MODEL_FLAGS = LOAD_FLAGS + DECODE_FLAGS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mt3_demo",
                                     description="Music transcription with the MT3 family, side by side.")
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks, the log and library warnings (also $MT3_DEMO_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="transcribe one file with one model")
    t.add_argument("audio", help="WAV, FLAC, OGG or MP3 file")
    t.add_argument("--model", default="transkun", help="model id (see `models`; default transkun)")
    t.add_argument("--checkpoint", type=Path, help="checkpoint file or folder (overrides the download)")
    t.add_argument("--midi", type=Path, help="write the notes as MIDI here")
    t.add_argument("--json", type=Path, help="write notes and timings as JSON here ('-' for stdout)")
    t.add_argument("--png", type=Path, help="write a piano-roll PNG here")
    t.add_argument("--tokens", action="store_true", help="include raw generated ids per segment in the JSON")
    _add_model_options(t)
    _add_backend(t)

    c = sub.add_parser("compare", help="run several models on one file; write MIDI, PNG, JSON, summary")
    c.add_argument("audio")
    c.add_argument("--models", required=True, help="comma-separated model ids, e.g. transkun,mt3")
    c.add_argument("--out", type=Path, required=True, help="output folder")
    c.add_argument("--reference", type=Path, help="ground-truth MIDI to score every model against")
    c.add_argument("--checkpoints", type=Path,
                   help="folder with checkpoints (like $MT3_DEMO_CHECKPOINTS: <dir>/<model_id>/<file>)")
    c.add_argument("--no-synth", action="store_true", help="skip rendering audio of each transcription")
    c.add_argument("--tokens", action="store_true", help="include raw generated ids in results.json")
    _add_model_options(c)
    _add_backend(c)

    e = sub.add_parser("evaluate", help="score models over a dataset (folder of audio+MIDI pairs, Slakh2100, "
                                        "MAESTRO): tracks.jsonl, table.md/.csv, f1.png, summary.json")
    e.add_argument("data", type=Path, help="dataset folder")
    e.add_argument("--models", required=True, help="comma-separated model ids, e.g. transkun,mt3")
    e.add_argument("--out", type=Path, required=True, help="output folder (a re-run resumes it)")
    e.add_argument("--split", help="Slakh2100 / MAESTRO split, e.g. test (default: every track)")
    e.add_argument("--checkpoints", type=Path,
                   help="folder with checkpoints (like $MT3_DEMO_CHECKPOINTS: <dir>/<model_id>/<file>)")
    e.add_argument("--retry-failed", action="store_true", help="evaluate again the tracks recorded as failed")
    e.add_argument("--ray", action="store_true", help="run on the Ray cluster of $RAY_ADDRESS (none: start one here)")
    e.add_argument("--gpus-per-model", type=float, default=0.0,
                   help="--ray: GPUs per model worker (default 0: CPU; 1: a card each; 0.5: two share one)")
    e.add_argument("--workers-per-model", type=int, default=1, help="--ray: workers per model (default 1)")
    e.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="--ray: CPUs per worker, also its torch threads (default 1)")
    _add_model_options(e)

    m = sub.add_parser("models", help="list models and whether their weights are available")
    _add_backend(m)
    return parser


class _Fail(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """The environment's settings, then the flags given; every value checked once (OptionError: exit 2)."""
    changes = {"max_seconds": getattr(args, "max_seconds", None), "device": getattr(args, "device", None),
               "backend": getattr(args, "backend", None),
               # <dir>/<model_id>/<file>: exactly $MT3_DEMO_CHECKPOINTS for this run, so a model without
               # a folder there keeps its usual weights (transkun's are in its wheel)
               "checkpoints_root": getattr(args, "checkpoints", None)}
    return dataclasses.replace(settings, **{k: v for k, v in changes.items() if v is not None})


def _manager(args: argparse.Namespace, model_ids: list[str], checkpoint: Path | None,
             settings: Settings) -> tuple[ModelManager, dict]:
    """A manager for these models (the settings' backend) with their load options, and their
    decode options; unknown ids and bad options stop here."""
    if settings.backend == "ray":
        manager = manager_for(settings)  # the options and the checkpoint travel with each request
    else:
        device = parse_device(settings.device) if settings.device else None
        manager = ModelManager(device=device, settings=settings)
    flags = {name: getattr(args, name) for name in MODEL_FLAGS}
    for spec in manager.specs.values():  # every flag checked, also where no chosen model uses it
        model_options(spec.options_type, flags)
        model_options(spec.decode_type, flags)
    manager.options = {m: model_options(manager.spec(m).options_type, flags) for m in model_ids}
    decode = {m: model_options(manager.spec(m).decode_type, flags) for m in model_ids}
    manager.checkpoints = {m: checkpoint for m in model_ids} if checkpoint else {}
    return manager, decode


def _reference(path: Path | None):
    if path is None:
        return None
    try:
        return read_reference(path)
    except ReferenceError as e:
        raise _Fail(EXIT_AUDIO, str(e)) from None


def cmd_transcribe(args: argparse.Namespace, settings: Settings) -> int:
    settings = _settings(args, settings)
    manager, decode = _manager(args, [args.model], args.checkpoint, settings)
    outputs = {"--midi": args.midi, "--png": args.png}
    if args.json is not None and str(args.json) != "-":
        outputs["--json"] = args.json
    writers.check_outputs_differ(outputs)
    for flag, path in outputs.items():  # never over an input, never a name too long: before the run
        if path is not None:
            writers.check_output_file(path, flag, inputs={"audio": args.audio, "--checkpoint": args.checkpoint})
    clip = load_clip(args.audio, limit_seconds=settings.max_seconds)
    for w in clip.warnings:
        print(f"warning: {w}", file=sys.stderr)
    result = transcribe_one(clip, args.model, manager, out_dir=None, decode=decode[args.model])
    if not result.ok:
        raise _Fail(EXIT_CODES.get(result.error_kind, EXIT_MODEL), result.error or "failed")
    notes = result.transcription.notes
    if args.midi:
        writers.write_midi(notes, clip.duration, args.midi)
    if args.png:
        writers.write_png(notes, clip.duration, args.png, title=result.display_name)
    if args.json is not None:
        text = json.dumps(writers.transcription_json(result, clip, include_tokens=args.tokens), indent=1)
        print(text) if str(args.json) == "-" else args.json.write_text(text)
    t = result.transcription
    total = t.stats["total"]
    print(f"{args.model}: {total} note{'' if total == 1 else 's'} "
          f"({t.stats['pitched']} pitched, {t.stats['drum']} drum) in "
          f"{clip.duration:.1f} s of audio; load {t.load_seconds:.2f} s, inference "
          f"{t.inference_seconds:.2f} s, RTF {t.rtf:.3f} on {t.device}", file=sys.stderr)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace, settings: Settings) -> int:
    model_ids = [m.strip() for m in args.models.split(",") if m.strip()]
    if not model_ids:
        raise _Fail(EXIT_USAGE, "--models needs at least one model id.")
    settings = _settings(args, settings)
    manager, decode = _manager(args, model_ids, None, settings)
    writers.check_output_dir(args.out, "--out", writers.run_file_names(model_ids, Path(args.audio).name),
                             inputs={"audio": args.audio, "--reference": args.reference,
                                     "--checkpoints": args.checkpoints})
    reference = _reference(args.reference)
    clip = load_clip(args.audio, limit_seconds=settings.max_seconds)
    if reference is not None:  # a reference longer than the recording is trimmed to it
        try:
            reference, warning = fit(reference, clip.duration, args.reference.name)
        except ReferenceError as e:
            raise _Fail(EXIT_AUDIO, str(e)) from None
        if warning:  # also in results.json's warnings
            clip.warnings.append(warning)
            print(f"warning: {warning}", file=sys.stderr)

    def report(r) -> None:
        count = len(r.transcription.notes) if r.ok else 0
        line = (f"{r.model_id}: {count} note{'' if count == 1 else 's'}, RTF {r.transcription.rtf:.3f}"
                if r.ok else f"{r.model_id}: error: {r.error}")
        print(line, file=sys.stderr)

    run = run_models(clip, model_ids, manager, args.out, reference=reference,
                     reference_name=args.reference.name if reference is not None else None,
                     include_tokens=args.tokens, listening=() if args.no_synth else writers.LISTENING,
                     on_result=report, decode=decode)
    for line in writers.scores_text(run) + writers.instrument_lines(run, markdown=False):
        print(line)
    print(f"wrote {run.files['results_json'].name} and {run.files['zip'].name} in {args.out}", file=sys.stderr)
    return EXIT_OK if run.ok_results else EXIT_MODEL


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from . import evaluate as ev  # the dataset code loads only for this command

    model_ids = [m.strip() for m in args.models.split(",") if m.strip()]
    if not model_ids:
        raise _Fail(EXIT_USAGE, "--models needs at least one model id.")
    if len(set(model_ids)) != len(model_ids):
        raise _Fail(EXIT_USAGE, "--models names a model twice.")
    if args.workers_per_model < 1 or args.cpus_per_worker <= 0 or args.gpus_per_model < 0:
        raise _Fail(EXIT_USAGE, "--workers-per-model must be at least 1, --cpus-per-worker above 0 and "
                                "--gpus-per-model at least 0.")
    # evaluate runs the models itself: here, or as its own Ray actors with --ray (not the Serve deployments)
    settings = dataclasses.replace(_settings(args, settings), backend="local")
    manager, decode = _manager(args, model_ids, None, settings)
    try:
        dataset = ev.find_dataset(args.data, args.split)
    except ev.DatasetError as e:
        raise _Fail(EXIT_AUDIO, str(e)) from None
    print(f"evaluate: {dataset.describe()}; models {', '.join(model_ids)}"
          + (" on Ray" if args.ray else ""), file=sys.stderr)
    job = ev.Evaluation(dataset, model_ids, args.out, ev.ManagerRecipe.of(manager), decode=decode,
                        max_seconds=settings.max_seconds, retry_failed=args.retry_failed)
    plan = ev.RayPlan(settings.ray_address, args.workers_per_model, args.gpus_per_model,
                      args.cpus_per_worker) if args.ray else None
    try:
        summary = ev.evaluate(job, manager=None if args.ray else manager, ray=plan)
    except ev.EvaluateError as e:
        raise _Fail(EXIT_USAGE, str(e)) from None
    print((args.out / "table.md").read_text(encoding="utf-8"))
    print(f"wrote tracks.jsonl, table.md, table.csv, f1.png and summary.json in {args.out}", file=sys.stderr)
    ok = any(c["tracks"] > c["failed"] for c in summary["counts"].values())
    return EXIT_OK if ok else EXIT_MODEL


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    manager = manager_for(_settings(args, settings))
    for model_id in manager.model_ids():
        spec, avail = manager.spec(model_id), manager.availability(model_id)
        print(f"{model_id:10s} {avail.status:12s} {spec.display_name} — {avail.weights or avail.reason}")
        if avail.fix and not avail.usable:
            print(f"{'':23s} to fix: {avail.fix}")
    for module, error in manager.import_errors.items():
        print(f"(adapter {module} failed to import: {error})")
    return EXIT_OK


_log_handler: logging.Handler | None = None


@contextlib.contextmanager
def _quiet_unless(debug: bool):
    """The package's log on stderr — one line per record, failures left to the CLI's own line —
    and library warnings silenced; with ``debug`` everything, tracebacks included."""
    global _log_handler
    log = logging.getLogger("mt3_demo")
    if _log_handler is not None:  # main() may run more than once in a process (tests)
        log.removeHandler(_log_handler)
    _log_handler = logging.StreamHandler(sys.stderr)
    if debug:
        _log_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        _log_handler.setLevel(logging.WARNING)
        # A record with a traceback is a failure the command reports itself, as its one line.
        _log_handler.addFilter(lambda record: record.exc_info is None)
        _log_handler.setFormatter(logging.Formatter("warning: %(message)s"))
    log.addHandler(_log_handler)
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter("ignore")
        yield


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    handlers = {"transcribe": cmd_transcribe, "compare": cmd_compare, "evaluate": cmd_evaluate,
                "models": cmd_models}
    settings = None
    try:
        settings = settings_from_env()  # the environment, read once (a bad variable: exit 2)
        if args.debug:
            settings = dataclasses.replace(settings, debug=True)
        with _quiet_unless(settings.debug):
            return handlers[args.command](args, settings)
    except _Fail as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except (OptionError, OutputError) as e:  # unknown model ids included
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except AudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_AUDIO
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one line for people; the traceback on request
        if args.debug or (settings is not None and settings.debug):
            raise
        # An OSError's text names the file by its full path: its reason and the file's name only.
        text = f"{e.strerror} ({Path(e.filename).name})" if isinstance(e, OSError) and e.filename else e
        print(f"error: {type(e).__name__}: {text}", file=sys.stderr)
        return EXIT_MODEL


if __name__ == "__main__":
    sys.exit(main())
