"""The benchmark harness (bench/harness.py) and the docs generator (bench/make_docs.py): cheap checks
that a benchmark's numbers reach docs/benchmarks.md intact. No benchmark is run here."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402
import make_docs  # noqa: E402


def echo(a, b=None, *, noise: bool = False):
    """Run by the child process of the round-trip test (module level, so the child can import it)."""
    import os

    if noise:
        print("progress line a library printed")  # must not be taken for the result
        print(harness.RESULT_MARKER.strip())  # nor a bare marker-looking line before the real one
    return {"a": a, "b": b, "env": os.environ.get("BENCH_HARNESS_TEST"), "main": __name__}


def fail():
    raise ValueError("planted failure")


def test_run_in_child_round_trip():
    out = harness.run_in_child(echo, [1, 2.5, "x"], b={"k": None}, noise=True, env={"BENCH_HARNESS_TEST": "yes"},
                               timeout=120)
    assert out == {"a": [1, 2.5, "x"], "b": {"k": None}, "env": "yes", "main": "test_bench_harness"}


def test_run_in_child_reports_the_childs_error():
    with pytest.raises(harness.ChildFailed, match="planted failure"):
        harness.run_in_child(fail, timeout=120)


def test_best_of_keeps_the_fastest_call_and_its_result(monkeypatch):
    clock = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])  # timed calls of 3, 1 and 2 seconds
    monkeypatch.setattr(harness.time, "perf_counter", lambda: next(clock))
    calls = iter(["warm-up", "slow", "fast", "middle"])
    warm = []
    seconds, result = harness.best_of(lambda: warm.append(1) or next(calls), repeat=3, warmup=1)
    assert (seconds, result) == (1.0, "fast")
    assert len(warm) == 4  # one warm-up, three timed
    with pytest.raises(ValueError):
        harness.best_of(lambda: None, repeat=0)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak reset needs Linux /proc")
def peaks_around_an_allocation() -> dict:
    """Run by the child process of the peak test: peak and RSS marks around 64 MiB made resident
    after a reset. In a process of its own, as the benchmarks measure: in the test process, threads
    left by earlier tests (a Gradio server) allocate and free beside it and move the marks."""
    harness.reset_peak_rss()
    before = harness.peak_rss_mb()
    block = bytearray(64 * 2**20)  # touched pages: 64 MiB resident
    block[:: 4096] = b"x" * len(block[:: 4096])
    after = harness.peak_rss_mb()
    with harness.PeakSampler(interval_s=0.001) as sampler:
        pass
    marks = {"before": before, "after": after, "sampled": sampler.peak_mb, "rss": harness.rss_mb()}
    del block
    return marks


def test_peak_rss_sees_an_allocation_after_a_reset():
    marks = harness.run_in_child(peaks_around_an_allocation, timeout=120)
    assert marks["after"] >= marks["before"] + 60
    assert marks["sampled"] >= marks["rss"] - 1  # the block is still resident


def sample_rows():
    return [{"path": "ours", "seconds": 1.23456, "note": "a|b"}, {"path": "baseline", "seconds": 2.5, "extra": None}]


def test_write_result_writes_the_documented_fields(tmp_path):
    path = harness.write_result("bench_sample", sample_rows(), {"ours vs baseline": 2.03}, command="python bench/x.py",
                                folder=tmp_path)
    data = json.loads(path.read_text())
    assert path == tmp_path / "bench_sample.json"
    assert set(data) == {"benchmark", "command", "date", "machine", "rows", "ratios"}
    assert data["benchmark"] == "bench_sample" and data["command"] == "python bench/x.py"
    assert data["rows"] == sample_rows() and data["ratios"] == {"ours vs baseline": 2.03}
    assert data["machine"]["cores"] >= 1 and data["date"].endswith("+00:00")


def test_make_docs_renders_known_and_unknown_results(tmp_path):
    harness.write_result("bench_sample", sample_rows(), {"ours vs baseline": 2.03}, command="python bench/x.py",
                         folder=tmp_path)
    harness.write_result("bench_mt3", [{"clip": "10 s", "decode s": 1.5}], {}, command="python bench/bench_mt3.py",
                         folder=tmp_path)
    text = make_docs.render(make_docs.load_results(tmp_path))
    # the known benchmark comes first, with its title; the unknown one by its name, rows as a table
    assert text.index(make_docs.KNOWN["bench_mt3"]["title"]) < text.index("## bench_sample")
    assert "| path | seconds | note | extra |" in text
    assert "| ours | 1.23 | a\\|b |  |" in text and "| baseline | 2.5 |  |  |" in text
    assert "| ours vs baseline | 2.03 |" in text
    assert "`python bench/x.py` — `bench/results/bench_sample.json`" in text
    out = tmp_path / "benchmarks.md"
    assert make_docs.main(["--results", str(tmp_path), "--out", str(out), "--check"]) == 1
    assert make_docs.main(["--results", str(tmp_path), "--out", str(out)]) == 0
    assert make_docs.main(["--results", str(tmp_path), "--out", str(out), "--check"]) == 0


def test_known_columns_come_first_and_no_column_is_lost():
    rows = [{"b": 1, "a": 2}, {"c": 3}]
    assert make_docs.columns_of(rows, ["a", "missing"]) == ["a", "b", "c"]
    assert make_docs.columns_of(rows) == ["b", "a", "c"]


def test_docs_benchmarks_md_is_generated_from_the_result_files():
    # docs/benchmarks.md is what bench/make_docs.py makes of bench/results/ now: no hand edits, no stale numbers
    assert make_docs.main(["--check"]) == 0


def test_bench_scripts_import_each_other_without_cycles():
    # Every import counts here (a function-level import back into a script was the old cycle).
    modules = {p.stem: p for p in BENCH.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name.split(".")[-1] if a.name.startswith("bench.") else a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets.add(node.module.split(".")[-1] if node.module.startswith("bench.") else node.module)
        graph[name] = {t for t in targets if t in modules and t != name}
    assert graph["harness"] == set()  # the harness depends on no script

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph[start])

    assert [n for n in graph if reaches(n, n)] == []
