"""The ray backend's cost and scaling (issue 22), measured in one run on a test-started local cluster.

1. Hop overhead: one clip (default 20 s of the piano example) through transkun locally, then through
   a Ray Serve replica (RayManager): the extra wall time of the hop as a share of the local run.
2. Throughput: N concurrent clients (default 8, threads on loopback) each sending one clip to 1, then
   2 transkun replicas: requests/min and p50/p95 latency; the ratio says whether replicas scale on
   this machine (its cores bound it).
3. On paper, from RTFs (measured here on the CPU, and the H200 RTFs given with --gpu-rtf): visitors
   per hour per replica at a 30 s clip, and replicas for 100 concurrent visitors at <= 60 s wait.

    python bench/bench_scale.py [--seconds 20] [--clients 8] [--clip-s 8]

Writes bench/results/bench_scale.json (``harness.write_result``; then ``python bench/make_docs.py``).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import threading
import time

from harness import ROOT, table, write_result

VISIT_CLIP_S = 30.0
VISITORS = 100
MAX_WAIT_S = 60.0


def excerpt(seconds: float):
    from mt3_demo.audio import Clip, load_clip

    clip = load_clip(ROOT / "examples_audio/piano_cschumann_polonaise.wav")
    n = int(seconds * clip.original_rate)
    import numpy as np

    reps = math.ceil(n / len(clip.original))
    return Clip.from_array(np.tile(clip.original, (reps, 1))[:n], clip.original_rate)


def deploy(replicas: int) -> None:
    from ray import serve

    from mt3_demo import serving

    serve.run(serving.app({"models": "transkun", "num_cpus": 0, "min_replicas": replicas,
                           "max_queued_requests": 64}), name=serving.APP_NAME)


def throughput(manager, clip, clients: int) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        start = time.perf_counter()
        manager.transcribe("transkun", clip)
        with lock:
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {"requests_per_min": round(60 * clients / wall, 2), "p50_s": round(statistics.median(latencies), 2),
            "p95_s": round(latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)], 2),
            "wall_s": round(wall, 2)}


def on_paper(rtf: float) -> dict:
    """One replica serves one run at a time: a 30 s clip takes rtf*30 s. Visitors waiting <= 60 s:
    with R replicas, 100 simultaneous visitors are served in ceil(100/R) rounds of rtf*30 s."""
    run_s = rtf * VISIT_CLIP_S
    per_hour = 3600 / run_s
    rounds = max(1, math.floor(MAX_WAIT_S / run_s))  # runs one replica finishes within the wait
    return {"rtf": round(rtf, 4), "run_s_at_30s_clip": round(run_s, 2), "visitors_per_hour_per_replica":
            round(per_hour), "replicas_for_100_at_60s": math.ceil(VISITORS / rounds) if run_s <= MAX_WAIT_S
            else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="clip of the overhead measurement")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--clip-s", type=float, default=8.0, help="clip of the throughput measurement")
    parser.add_argument("--gpu-rtf", default="", help="model=rtf,... measured on a GPU (README's GPU section)")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray
    import torch
    from ray import serve

    from mt3_demo.manager import ModelManager
    from mt3_demo.options import Settings, settings_from_env
    from mt3_demo.remote import RayManager

    clip = excerpt(args.seconds)
    # The settings the replicas read from the same environment (the builder forwards it to them).
    local = ModelManager(device=torch.device("cpu"), settings=settings_from_env())
    local.transcribe("transkun", excerpt(2.0))  # warm: weights loaded, first-call costs paid
    start = time.perf_counter()
    t_local = local.transcribe("transkun", clip)
    local_s = time.perf_counter() - start
    del local

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(proxy_location="Disabled")
    rows = []
    try:
        deploy(1)
        remote = RayManager(Settings(backend="ray"))
        remote.transcribe("transkun", excerpt(2.0))  # the replica's first call, as locally
        start = time.perf_counter()
        t_ray = remote.transcribe("transkun", clip)
        ray_s = time.perf_counter() - start
        assert t_ray.notes == t_local.notes
        overhead = (ray_s - local_s) / local_s
        rows.append({"measure": "hop overhead", "clip_s": args.seconds, "local_wall_s": round(local_s, 2),
                     "ray_wall_s": round(ray_s, 2), "ray_inference_s": round(t_ray.inference_seconds, 2),
                     "overhead_share": round(overhead, 4),
                     # The hop itself: the front end's wall time beyond the replica's own inference
                     # time, within one request (immune to the load changing between two runs).
                     "hop_share_of_ray_wall": round((ray_s - t_ray.inference_seconds) / ray_s, 4)})
        short = excerpt(args.clip_s)
        one = throughput(remote, short, args.clients)
        rows.append({"measure": "throughput", "replicas": 1, "clients": args.clients, "clip_s": args.clip_s, **one})
        deploy(2)
        two = throughput(remote, short, args.clients)
        rows.append({"measure": "throughput", "replicas": 2, "clients": args.clients, "clip_s": args.clip_s, **two})
    finally:
        serve.shutdown()
        ray.shutdown()
    rtfs = {"transkun (CPU, here)": t_local.inference_seconds / clip.duration}
    for item in filter(None, args.gpu_rtf.split(",")):
        name, _, value = item.partition("=")
        rtfs[f"{name} (GPU, given)"] = float(value)
    for name, rtf in rtfs.items():
        rows.append({"measure": "on paper", "model": name, **on_paper(rtf)})
    ratios = {"hop_overhead_share": round(overhead, 4), "hop_share_of_ray_wall": rows[0]["hop_share_of_ray_wall"],
              "throughput_2_vs_1_replicas": round(two["requests_per_min"] / one["requests_per_min"], 3)}
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print(table(rows, columns))
    print(ratios)
    write_result("bench_scale", rows, ratios)


if __name__ == "__main__":
    main()
