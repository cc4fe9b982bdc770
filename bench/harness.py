"""What every benchmark shares: best-of-N timing, peak memory, a function run in a fresh process,
and the result file that ``bench/make_docs.py`` turns into docs/benchmarks.md.

    from harness import best_of, peak_rss_mb, run_in_child, write_result

* :func:`best_of` — the fastest of ``repeat`` calls. A shared machine only ever adds time, so the
  minimum is the least disturbed measurement; ratios are taken between paths of one run.
* :func:`peak_rss_mb` / :func:`reset_peak_rss` — this process's high-water mark (Linux ``VmHWM``),
  :func:`rss_mb` the current resident set of a process and its children, :class:`PeakSampler`
  the highest value seen by a sampling thread (for a process whose own mark we cannot read, e.g. a
  server in a child process).
* :func:`run_in_child` — calls a module-level function of a bench script in a fresh Python process
  and returns what it returned (JSON round trip). Memory measurements need a fresh process: a
  process's peak never goes down, and what an earlier run left in the allocator would count.
* :func:`free_port`, :func:`wait_until_up`, :func:`stop_server` — the app as a server in a child
  process, for the benchmarks that go through its API.
* :func:`table` — a Markdown table of rows (what the scripts print and make_docs renders).
* :func:`write_result` — ``bench/results/<name>.json``: ``{"benchmark", "command", "date",
  "machine", "rows", "ratios"}``.
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
import resource
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
for _path in (str(ROOT), str(BENCH)):  # the package and the sibling bench modules import as top level
    if _path not in sys.path:
        sys.path.insert(0, _path)

# The child prints its return value on a line of its own after this marker, so whatever else it
# prints (progress, library warnings) cannot be mistaken for the result.
RESULT_MARKER = "@@bench-result@@ "


# ------------------------------------------------------------------------------------------------
# Timing


def best_of(fn: Callable[[], Any], repeat: int, warmup: int = 0,
            sync: Callable[[], None] | None = None) -> tuple[float, Any]:
    """(seconds, result) of the fastest of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones.
    ``sync`` runs before each clock read (e.g. ``torch.cuda.synchronize``) so queued device work
    is counted."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    for _ in range(warmup):
        fn()
    best: tuple[float, Any] = (float("inf"), None)
    for _ in range(repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync()
        seconds = time.perf_counter() - t0
        if seconds < best[0]:
            best = (seconds, out)
    return best


def synchronize(device) -> None:
    """Wait for the work queued on a CUDA device (a no-op for the CPU), so a clock read counts it."""
    if getattr(device, "type", device) == "cuda":
        import torch

        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------
# Memory


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux: ``VmHWM``, which starts afresh at exec and can be reset (:func:`reset_peak_rss`).
    getrusage's ``ru_maxrss`` cannot: a child process would inherit its parent's peak. Elsewhere
    getrusage is all there is.
    """
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def reset_peak_rss() -> None:
    """Set this process's peak mark to its current RSS (Linux ``/proc/self/clear_refs``), so a later
    :func:`peak_rss_mb` is the peak of what follows."""
    Path("/proc/self/clear_refs").write_text("5")


def status_mb() -> dict[str, float]:
    """This process's ``VmRSS``, ``VmHWM``, ``RssAnon`` and ``RssFile``, MiB (Linux)."""
    return {k: (_status_kb(k) or 0) / 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def rss_mb(pid: int | None = None, children: bool = False) -> float:
    """Current resident set of a process (this one by default), with its children if asked, MiB."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    if children:
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # a child that just ended
                pass
    return total / 2**20


class PeakSampler:
    """The highest RSS of a process (this one by default; with children if asked) seen by a thread
    sampling every ``interval_s``, while the ``with`` block runs (or from :meth:`start` to :meth:`stop`).
    ``peak_mb`` is readable at any time."""

    def __init__(self, pid: int | None = None, children: bool = False, interval_s: float = 0.005):
        self.pid, self.children, self.interval_s = pid, children, interval_s
        self.peak_mb = rss_mb(pid, children)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> bool:
        try:
            self.peak_mb = max(self.peak_mb, rss_mb(self.pid, self.children))
            return True
        except Exception:  # noqa: BLE001 - the process went away: the peak so far stands
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s) and self._sample():
            pass

    def start(self) -> "PeakSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def __enter__(self) -> "PeakSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------------
# A function in a fresh process


class ChildFailed(RuntimeError):
    """The child process exited with an error; the message ends with its stderr."""


def run_in_child(fn: Callable[..., Any], *args: Any, env: dict[str, str] | None = None,
                 timeout: float | None = None, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a fresh Python process; returns its return value.

    ``fn`` must be a module-level function of a file in bench/ (the child imports that file by
    path, so a script's ``if __name__ == "__main__"`` block does not run); arguments and the return
    value travel as JSON. ``env`` is added to this process's environment for the child.
    """
    module = sys.modules[fn.__module__]
    source = Path(module.__file__).resolve()
    call = json.dumps({"file": str(source), "function": fn.__qualname__, "args": args, "kwargs": kwargs})
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", call], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise ChildFailed(f"{source.name}:{fn.__qualname__} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    results = [line[len(RESULT_MARKER):] for line in proc.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if not results:
        raise ChildFailed(f"{source.name}:{fn.__qualname__} printed no result:\n{proc.stderr[-3000:]}")
    return json.loads(results[-1])


def _child_main(call_json: str) -> None:
    call = json.loads(call_json)
    path = Path(call["file"])
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    result = getattr(module, call["function"])(*call["args"], **call["kwargs"])
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------
# A server in a child process (the app, for the benchmarks that go through its API)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Return once ``url`` answers; stop if the server process exits or ``timeout`` passes."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server did not answer at {url} within {timeout:g} s")


def stop_server(server: subprocess.Popen) -> None:
    """Terminate the server's process; kill it if it has not gone in 30 s."""
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


# ------------------------------------------------------------------------------------------------
# Tables and the result file


def format_cell(value: Any) -> str:
    """A table cell: floats to three significant digits without exponents for everyday sizes,
    nothing for None, and '|' escaped so a cell cannot split a Markdown row."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if abs(value) >= 100:
            text = f"{value:.0f}"
        elif abs(value) >= 10:
            text = f"{value:.1f}"
        elif abs(value) >= 0.001 or value == 0:
            text = f"{value:.3g}"
        else:
            text = f"{value:.2e}"
    else:
        text = str(value)
    return text.replace("|", "\\|")


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain Markdown table of ``rows`` (dicts) in ``columns``; a missing key is an empty cell."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)



def machine() -> dict[str, Any]:
    """What the numbers ran on: CPU model, cores (all and allowed to this process), load average at
    the time of writing, Python, torch and the GPU when present."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version()}
    if hasattr(os, "sched_getaffinity"):
        info["cores_allowed"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_average"] = round(os.getloadavg()[0], 2)
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    return info


def command_line() -> str:
    """The command that ran this benchmark, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and other number-likes become Python numbers, tuples lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def write_result(name: str, rows: list[dict], ratios: dict[str, Any], command: str | None = None,
                 folder: Path = RESULTS, extra: dict[str, Any] | None = None) -> Path:
    """Write ``<folder>/<name>.json`` (default bench/results/) and return its path.

    ``rows``: one dict per measured case, the same keys in each where possible (they become a table's
    columns); ``ratios``: the comparisons the benchmark exists for, each taken within this run
    (a name → a number, e.g. ``{"decode, ours vs upstream-like": 2.28}``).
    """
    result = {"benchmark": name, "command": command or command_line(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "rows": _plain(rows), "ratios": _plain(ratios), **_plain(extra or {})}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", file=sys.stderr)
    return path


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child_main(sys.argv[2])
    else:
        sys.exit("harness.py is a library; it runs itself only as the child of run_in_child")
