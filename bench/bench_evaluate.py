"""``evaluate`` throughput: tracks per hour for transkun here (local) against ``--ray`` with N workers,
the Ray path's overhead per track, and on paper the wall time of the papers' test splits.

    python bench/bench_evaluate.py                      # 4 tracks of 6 s, 2 Ray workers on 2 CPUs
    python bench/bench_evaluate.py --tracks 6 --seconds 8 --workers 2

Both runs evaluate the same dataset (the example clips cut to ``--seconds``, in a fresh output
folder each) in one process; the Ray cluster is started before the Ray run is timed and its
start-up is reported apart. "Overhead per track" is the time a worker slot spent outside
:func:`~mt3_demo.evaluate.track.evaluate_track` (whose own ``total_s`` includes reading, the model's
first load, inference and scoring), divided by the tracks: ``(wall × slots − Σ total_s) / tracks``.

The Ray path's own costs are also measured apart from any model work (:func:`ray_costs`): a
worker's start, and the round trip of a track that fails at once. On paper: wall = audio × RTF /
GPUs + audio × (reading + scoring seconds per audio second, measured here) / GPUs + tracks ×
round trip / GPUs + a worker's start and one model load (per GPU, in parallel), with
the RTFs stated in ``PAPER_RTF`` (where each comes from is written beside it) and the split sizes
in ``SPLITS`` (assumptions stated there). Writes bench/results/bench_evaluate.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ROOT, write_result  # noqa: E402 - harness also puts ROOT on sys.path

EXAMPLES = ROOT / "examples_audio"
STEMS = ["piano_cschumann_polonaise", "band_foster_jeanie", "ensemble_johnson_lift_every_voice",
         "drums_liliuokalani_aloha_oe"]

# The test splits (the papers' tables). Slakh2100: 151 test tracks; the whole set is ~145 h over
# 2100 tracks, so ~250 s a track is assumed (37 750 s). MAESTRO v3.0.0 test: 177 performances,
# ~20 h (72 000 s) per its table.
SPLITS = {"slakh2100-test": {"tracks": 151, "audio_s": 151 * 250.0},
          "maestro-v3-test": {"tracks": 177, "audio_s": 20 * 3600.0}}

# RTF (inference seconds per audio second) per model and device, and where each number comes from.
# The GPU numbers are the README's H200 table (60 s clip, EOS off: MT3 256 ids a segment, MR-MT3 64,
# YourMT3+ 64 per channel; real decoding with EOS varies with the music). transkun's CPU RTF is
# measured by this script (long clips run at ~0.8 per the README's CPU section); no GPU RTF of
# transkun has been measured here.
PAPER_RTF = {
    "mt3": {"gpu": 0.006, "source": "README H200 table, fp32 CUDA graph, 256 ids/segment"},
    "mr_mt3": {"gpu": 0.031, "source": "README H200 table, fp32 CUDA graph, 64 ids/segment"},
    "yourmt3": {"gpu": 0.011, "source": "README H200 table, fp32 CUDA graph, 64 ids/segment/channel"},
    "transkun": {"gpu": None, "cpu_long_clips": 0.8,
                 "source": "not measured on a GPU; CPU RTF ~0.8 on clips >= 20 s (README CPU section)"},
}

LOAD_S = 10.0  # assumed: one model load per GPU worker (weights from a local disk), paid once per run


def build_dataset(folder: Path, tracks: int, seconds: float) -> Path:
    import soundfile as sf

    from mt3_demo.notes import Note, notes_from_midi, write_midi

    for i in range(tracks):
        stem = STEMS[i % len(STEMS)]
        x, rate = sf.read(EXAMPLES / f"{stem}.wav", dtype="float32")
        start = int((i // len(STEMS)) * seconds * rate) % max(1, len(x) - int(seconds * rate))
        sf.write(folder / f"{i:02d}_{stem}.wav", x[start:start + int(seconds * rate)], rate)
        t0, t1 = start / rate, start / rate + seconds
        notes = [Note(n.onset - t0, min(n.offset, t1) - t0, n.pitch, n.velocity, n.program, n.is_drum)
                 for n in notes_from_midi(EXAMPLES / f"{stem}.mid") if t0 <= n.onset < t1 - 0.02]
        write_midi(notes, folder / f"{i:02d}_{stem}.mid", end_time=seconds)
    return folder


def timed_run(data: Path, out: Path, model: str, plan=None) -> dict:
    from mt3_demo.evaluate import Evaluation, ManagerRecipe, evaluate, find_dataset
    from mt3_demo.options import Settings

    dataset = find_dataset(data)
    job = Evaluation(dataset, [model], out, ManagerRecipe(Settings(device="cpu")))
    start = time.perf_counter()
    evaluate(job, ray=plan, stream=open(os.devnull, "w"))
    wall = time.perf_counter() - start
    lines = [json.loads(t) for t in (out / "tracks.jsonl").read_text().splitlines()]
    failed = [d for d in lines if "error" in d]
    if failed:
        raise SystemExit(f"{len(failed)} tracks failed: {failed[0]['error']}")
    inside = math.fsum(d["timings"]["total_s"] for d in lines)
    return {"tracks": len(lines), "wall_s": round(wall, 3), "inside_s": round(inside, 3),
            "load_s": round(sum(d["timings"]["load_s"] for d in lines), 3),
            "inference_s": round(math.fsum(d["timings"]["inference_s"] for d in lines), 3),
            "read_score_s": round(math.fsum(d["timings"]["read_s"] + d["timings"]["score_s"] for d in lines), 3),
            "audio_s": round(math.fsum(d["audio_seconds"] for d in lines), 3),
            "tracks_per_hour": round(3600 * len(lines) / wall, 1)}


def ray_costs(data: Path, calls: int = 20) -> dict:
    """The Ray path's own costs, apart from any model work: a worker's start (process, imports,
    manager) until its first answer, and the round trip of a track whose reference cannot be read
    (the worker answers at once) minus the time the worker spent on it."""
    import ray

    from mt3_demo.evaluate import ManagerRecipe, Track
    from mt3_demo.evaluate.cluster import TrackWorker
    from mt3_demo.options import Settings

    bad = Track("missing.wav", data / "missing.wav", data / "missing.mid", "missing")
    start = time.perf_counter()
    actor = ray.remote(TrackWorker).options(num_cpus=1).remote(ManagerRecipe(Settings(device="cpu")), "transkun")
    ray.get(actor.evaluate.remote(bad, None, 600.0))
    startup = time.perf_counter() - start
    overheads = []
    for _ in range(calls):
        t = time.perf_counter()
        result = ray.get(actor.evaluate.remote(bad, None, 600.0))
        overheads.append(time.perf_counter() - t - result.line["timings"]["total_s"])
    ray.kill(actor)
    overheads.sort()
    return {"worker_start_s": round(startup, 3), "round_trip_overhead_ms_median": round(1000 * overheads[calls // 2], 2),
            "round_trip_overhead_ms_max": round(1000 * overheads[-1], 2)}


def on_paper(overhead_per_track_s: float, fixed_s: float, cpu_rtf: float, read_score_rtf: float) -> list[dict]:
    rows = []
    for split, size in SPLITS.items():
        for model, rtf in PAPER_RTF.items():
            for gpus in (1, 8):
                if rtf["gpu"] is None:
                    rows.append({"split": split, "model": model, "gpus": gpus, "wall_h": None,
                                 "note": rtf["source"], "cpu_1_worker_h": round(
                                     (size["audio_s"] * (cpu_rtf + read_score_rtf) + size["tracks"] * overhead_per_track_s) / 3600, 1)})
                    continue
                wall = (size["audio_s"] * (rtf["gpu"] + read_score_rtf) + size["tracks"] * overhead_per_track_s) / gpus + fixed_s
                rows.append({"split": split, "model": model, "gpus": gpus, "wall_min": round(wall / 60, 1),
                             "rtf": rtf["gpu"], "source": rtf["source"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (each 1 CPU, 1 torch thread)")
    parser.add_argument("--model", default="transkun")
    args = parser.parse_args()

    import ray

    from mt3_demo.evaluate import RayPlan

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        data = build_dataset(tmp / "data", args.tracks, args.seconds)
        local = timed_run(data, tmp / "local", args.model)
        start = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        cluster_start = time.perf_counter() - start
        try:
            costs = ray_costs(data)
            remote = timed_run(data, tmp / "ray", args.model, RayPlan(workers_per_model=args.workers))
        finally:
            ray.shutdown()
        same = (tmp / "local" / "table.csv").read_bytes() == (tmp / "ray" / "table.csv").read_bytes()

    local["overhead_per_track_s"] = round((local["wall_s"] - local["inside_s"]) / local["tracks"], 3)
    remote["overhead_per_track_s"] = round((remote["wall_s"] * args.workers - remote["inside_s"]) / remote["tracks"], 3)
    remote["cluster_start_s"] = round(cluster_start, 3)
    remote.update(costs)
    per_track = costs["round_trip_overhead_ms_median"] / 1000
    fixed = costs["worker_start_s"] + LOAD_S  # per GPU worker, once
    cpu_rtf = local["inference_s"] / local["audio_s"]
    read_score_rtf = local["read_score_s"] / local["audio_s"]  # decoding, resampling, scoring: CPU work per audio second
    rows = [{"path": "local", "model": args.model, "seconds_per_track": args.seconds, **local},
            {"path": f"ray, {args.workers} workers x 1 CPU", "model": args.model,
             "seconds_per_track": args.seconds, **remote}]
    ratios = {"ray_over_local_tracks_per_hour": round(remote["tracks_per_hour"] / local["tracks_per_hour"], 2),
              "same_table": same}
    paper = {"assumptions": {"splits": SPLITS, "rtf": PAPER_RTF, "overhead_per_track_s": per_track,
                             "worker_start_s": costs["worker_start_s"], "load_s_per_gpu": LOAD_S,
                             "cpu_rtf_measured_here": round(cpu_rtf, 3),
                             "read_and_score_s_per_audio_s": round(read_score_rtf, 4)},
             "rows": on_paper(per_track, fixed, PAPER_RTF["transkun"]["cpu_long_clips"], read_score_rtf)}
    write_result("bench_evaluate", rows, ratios, extra={"on_paper": paper})
    for row in rows:
        print(f"{row['path']:24s} {row['tracks']} tracks in {row['wall_s']:.1f} s: {row['tracks_per_hour']:.0f} "
              f"tracks/h, overhead {row['overhead_per_track_s']:.2f} s/track")
    print(f"ray worker start {costs['worker_start_s']:.1f} s, round trip overhead "
          f"{costs['round_trip_overhead_ms_median']:.1f} ms/track (median of 20)")
    print(f"ray / local tracks per hour: {ratios['ray_over_local_tracks_per_hour']:.2f}x "
          f"(same table: {same}); cluster start {cluster_start:.1f} s (not in the Ray wall time)")
    for row in paper["rows"]:
        print(row)


if __name__ == "__main__":
    main()
