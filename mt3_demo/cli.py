"""Command line: ``python -m mt3_demo {transcribe,compare,models}``.

Exit codes: 0 success · 2 usage error · 3 bad audio input · 4 checkpoint problem · 1 model failure.
Errors print one line on stderr, never a traceback (set ``MT3_DEMO_DEBUG=1`` for one).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_MODEL, EXIT_USAGE, EXIT_AUDIO, EXIT_CHECKPOINT = 0, 1, 2, 3, 4


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model options (each model uses the ones that apply to it)")
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    g.add_argument("--max-tokens", type=int, help="decode at most N tokens per segment (token models)")
    g.add_argument("--compat", choices=["magenta", "kunato"],
                   help="MT3: 'magenta' (default, what the weights were trained with) or 'kunato' (port)")
    g.add_argument("--frontend", choices=["tf", "torchaudio", "torchaudio-legacy"],
                   help="MR-MT3: mel frontend (default: the one the checkpoint was trained with)")
    g.add_argument("--memory-length", type=int, help="MR-MT3: memory length N (default from the registry)")
    g.add_argument("--checkpoint-name", help="pick a known published checkpoint of the model by name")
    g.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"],
                   help="CUDA precision (default auto: the model's usual choice; fp32 on CPU)")
    g.add_argument("--max-seconds", type=float, help="reject audio longer than this (default 600)")


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    keys = {"max_tokens": args.max_tokens, "compat": args.compat, "frontend": args.frontend,
            "memory_length": args.memory_length, "checkpoint_name": args.checkpoint_name,
            "precision": args.precision}
    return {k: v for k, v in keys.items() if v is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mt3_demo",
                                     description="Music transcription with the MT3 family, side by side.")
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

    sub.add_parser("models", help="list models and whether their weights are available")
    return parser


def _manager(args: argparse.Namespace, model_ids: list[str], checkpoint: Path | None):
    import torch

    from .manager import ModelManager, default_device

    device = default_device()
    if getattr(args, "device", None):
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise _Fail(EXIT_USAGE, f"--device {args.device!r} is not a device; use cpu, cuda or cuda:N.") from None
        if device.type not in ("cpu", "cuda"):
            raise _Fail(EXIT_USAGE, f"--device {args.device!r} is not supported; use cpu, cuda or cuda:N.")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise _Fail(EXIT_USAGE, "--device cuda was requested but CUDA is not available on this machine.")
    options = _model_options(args) if hasattr(args, "max_tokens") else {}
    return ModelManager(device=device,
                        checkpoints={m: checkpoint for m in model_ids} if checkpoint else {},
                        options={m: dict(options) for m in model_ids})


class _Fail(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _load_audio(args: argparse.Namespace):
    from .audio import load_clip

    return load_clip(args.audio, limit_seconds=args.max_seconds)


def cmd_transcribe(args: argparse.Namespace) -> int:
    from . import pianoroll
    from .notes import write_midi

    clip = _load_audio(args)
    for w in clip.warnings:
        print(f"warning: {w}", file=sys.stderr)
    manager = _manager(args, [args.model], args.checkpoint)
    manager.spec(args.model)  # unknown id → CheckpointError with the known ids
    result = manager.transcribe(args.model, clip)
    if args.midi:
        write_midi(result.notes, args.midi, end_time=clip.duration)
    if args.png:
        pianoroll.save_png(result.notes, clip.duration, args.png, title=manager.spec(args.model).display_name)
    payload = result.to_json(include_tokens=args.tokens)
    payload["audio"] = str(args.audio)
    payload["warnings"] = clip.warnings
    if args.json is not None:
        text = json.dumps(payload, indent=1)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text)
    stats = payload["stats"]
    print(f"{args.model}: {stats['total']} notes ({stats['pitched']} pitched, {stats['drum']} drum) in "
          f"{clip.duration:.1f} s of audio; load {result.load_seconds:.2f} s, inference "
          f"{result.inference_seconds:.2f} s, RTF {result.rtf:.3f} on {result.device}", file=sys.stderr)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from . import compare
    from .notes import notes_from_midi

    model_ids = [m.strip() for m in args.models.split(",") if m.strip()]
    if not model_ids:
        raise _Fail(EXIT_USAGE, "--models needs at least one model id.")
    reference = None
    if args.reference is not None:
        try:
            reference = notes_from_midi(args.reference)
        except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
            raise _Fail(EXIT_AUDIO, f"reference MIDI {args.reference} could not be read: {e}") from e
    clip = _load_audio(args)
    manager = _manager(args, model_ids, args.checkpoints)
    for m in model_ids:
        manager.spec(m)
    results = []
    for r in compare.run(clip, model_ids, manager, args.out, synthesize=not args.no_synth):
        line = (f"{r.model_id}: {len(r.transcription.notes)} notes, RTF {r.transcription.rtf:.3f}"
                if r.ok else f"{r.model_id}: error: {r.error}")
        print(line, file=sys.stderr)
        results.append(r)
    report = compare.finish_run(results, clip, args.out, reference=reference,
                                reference_name=str(args.reference) if reference is not None else None,
                                include_tokens=args.tokens)
    for line in compare.instrument_lines(results, report.instruments, markdown=False):
        print(line)
    print(f"wrote {report.results_json} and {report.zip_path.name}", file=sys.stderr)
    return EXIT_OK if any(r.ok for r in results) else EXIT_MODEL


def cmd_models(args: argparse.Namespace) -> int:
    from .manager import ModelManager

    manager = ModelManager()
    for model_id in manager.model_ids():
        spec, avail = manager.spec(model_id), manager.availability(model_id)
        print(f"{model_id:10s} {avail.status:12s} {spec.display_name} — {avail.reason}")
    for module, error in manager.import_errors.items():
        print(f"(adapter {module} failed to import: {error})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .audio import AudioError
    from .checkpoints import CheckpointError

    handlers = {"transcribe": cmd_transcribe, "compare": cmd_compare, "models": cmd_models}
    try:
        return handlers[args.command](args)
    except _Fail as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except AudioError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_AUDIO
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_CHECKPOINT
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one line for people; the traceback on request
        if os.environ.get("MT3_DEMO_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_MODEL


if __name__ == "__main__":
    sys.exit(main())
