"""The token loops every T5-style decoder here shares (MT3, MR-MT3, YourMT3+): greedy argmax over
a batch of rows, each row one segment (or one YourMT3+ channel of one segment).

* :func:`greedy_decode`: a :class:`~.t5.KVCache` that grows in blocks; finished rows leave the
  batch in groups, and rows that would outgrow a memory budget are set aside and resumed. The
  CPU's path (and, with ``use_cache=False``, the naive reference that re-runs the whole prefix).
* :func:`static_decode`: a :class:`~.t5.StaticKVCache`, whose every step is the same kernels on the
  same buffers, so that on CUDA one captured graph replays it. The default on CUDA.

Both return the same ids (tests/test_speed_paths.py, tests/test_static_decode.py). The models only
need ``decoder(tokens, memory=|cache=)``, ``decoder.init_cache(memory)`` and ``lm_head(hidden)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .t5 import T5, KVCache, StaticKVCache

STATIC_FIRST = 128  # positions a static cache starts with; it doubles when full (up to max_tokens),
# so a step attends over at most twice the positions written (most rows end within a few hundred)
EOS_CHECK_STEPS = 16  # static decoding reads the ids back (a device sync) this often to stop early
WARMUP_STEPS = 2  # steps run eagerly before a capture (cuBLAS handles and workspaces get made)


def greedy_decode(model: T5, memory: Tensor, max_tokens: int, *, use_cache: bool = True,
                  start_id: int = 0, eos_id: int | None = 1, first_eos_step: int = 0,
                  on_step: Callable[[int, int], None] | None = None,
                  on_finished: Callable[[int], None] | None = None,
                  cache_budget: int | None = None, static: bool | None = None,
                  static_first: int | None = None) -> list[list[int]]:
    """Greedy argmax decoding of every row of ``memory`` [B, S, d] at once.

    ``model`` needs ``decoder(tokens, memory=|cache=)``, ``decoder.init_cache(memory)`` and
    ``lm_head(hidden)``. An EOS emitted before step ``first_eos_step`` does not finish a row
    (YourMT3's rule; 0 elsewhere); ``eos_id=None`` decodes exactly ``max_tokens`` (benchmarks).

    Returns per row the generated ids without the start token, up to and including EOS when it
    came within ``max_tokens``. With ``use_cache`` each step runs only the newest position through
    the decoder (self-attention keys/values cached, cross-attention ones computed once); without it
    every step re-runs the whole prefix (the naive reference). ``on_step(step, live_rows)`` is called
    per step (rows of the batch running now), ``on_finished(rows)`` whenever more rows have
    finished (rows finished in all). Call it under ``torch.inference_mode()``.

    Finished rows: a row that emitted EOS stays in the batch (fed its own predictions, its later
    ids ignored) until finished rows make up an eighth of the batch; then they are all dropped in
    one go. Dropping copies every live row's cached keys/values, so dropping each row the step it
    finishes would copy the whole cache once per row; a finished row left in costs only its share
    of a step. Rows never influence each other, so ids are the same.

    ``cache_budget`` (bytes, cached decoding only) bounds the caches of all rows together. Rows
    mostly stop long before ``max_tokens``, so the batch starts whole; when its self-attention
    storage is about to grow by a block past the budget, the rows that do not fit are set aside
    with their caches as they are and resumed once the others have finished (memory is freed only
    by finishing rows). At least one row always goes on, so when all rows fit the budget at their
    first block, the caches stay within the budget plus one row at ``max_tokens``.

    ``static`` decodes with a :class:`StaticKVCache` instead (:func:`static_decode`: on CUDA, a
    captured graph per group of rows and cache size); by default (None) it does so on CUDA without
    autocast; ``False`` never (the decode options' ``cuda_graphs``, ``Settings.cuda_graphs``).
    Same ids either way up to float32 rounding (tests/test_static_decode.py). ``static_first``:
    the positions a static cache starts with (None: :data:`STATIC_FIRST`).
    """
    if static is None:
        static = use_cache and static_by_default(memory)
    if static:
        return static_decode(model, memory, max_tokens, start_id=start_id, eos_id=eos_id,
                             first_eos_step=first_eos_step, on_step=on_step, on_finished=on_finished,
                             cache_budget=cache_budget, first_positions=static_first)
    b = memory.shape[0]
    device = memory.device
    out = torch.zeros(b, max(max_tokens, 0), dtype=torch.long, device=device)
    lengths = [max_tokens] * b
    tokens = torch.full((b, 1), start_id, dtype=torch.long, device=device)
    state = DecodeState(cache=model.decoder.init_cache(memory)) if use_cache else \
        DecodeState(memory=memory, history=tokens)
    pending = [_Rows(rows=torch.arange(b, device=device), tokens=tokens, step=0,
                     finished=torch.zeros(b, dtype=torch.bool, device=device), state=state)]
    finished_rows = 0
    while pending:
        batch = pending.pop()
        while batch.step < max_tokens and batch.live:
            if cache_budget is not None and batch.grows_next():
                set_aside = batch.split_to_fit(cache_budget - sum(r.cache_bytes() for r in pending))
                if set_aside is not None:
                    pending.append(set_aside)
            step, state = batch.step, batch.state
            if state.cache is not None:
                hidden = model.decoder(batch.tokens, cache=state.cache)
            else:
                hidden = model.decoder(state.history, memory=state.memory)
            next_ids = model.lm_head(hidden[:, -1]).argmax(-1)  # first maximum on ties, like HF
            out[batch.rows, step] = next_ids  # a finished row's extra ids land past its length: never read
            batch.tokens = next_ids[:, None]
            batch.step += 1
            if on_step is not None:
                on_step(step, batch.live)
            if eos_id is not None and step >= first_eos_step:
                done = (next_ids == eos_id) & ~batch.finished
                if bool(done.any()):
                    for r in batch.rows[done].tolist():
                        lengths[r] = step + 1
                    finished_rows += batch.finish(done)
                    if on_finished is not None:
                        on_finished(finished_rows)
            if state.cache is None:
                state.history = torch.cat([state.history, batch.tokens], dim=1)
        if batch.live:  # rows that ran to max_tokens
            finished_rows += batch.live
            if on_finished is not None:
                on_finished(finished_rows)
    out = out.cpu()
    return [out[i, :lengths[i]].tolist() for i in range(b)]


def static_by_default(memory: Tensor) -> bool:
    """Decode ``memory`` statically (CUDA graphs) unless told otherwise: on CUDA, without autocast
    (its weight-cast cache does not mix with a captured graph)."""
    return memory.is_cuda and not torch.is_autocast_enabled("cuda")


def static_decode(model: T5, memory: Tensor, max_tokens: int, *, start_id: int = 0, eos_id: int | None = 1,
                  first_eos_step: int = 0, on_step: Callable[[int, int], None] | None = None,
                  on_finished: Callable[[int], None] | None = None, cache_budget: int | None = None,
                  graph: bool | None = None, first_positions: int | None = None) -> list[list[int]]:
    """:func:`greedy_decode` on a :class:`StaticKVCache`: same arguments, same result.

    Why: on a GPU a decoder step at these sizes is a few hundred small kernels whose launches cost
    far more than their work (MT3 on an H200: 5.1 ms a step launched from Python, for ~0.1 ms of
    memory traffic; bench/bench_cuda.py). With every step reading its position from the device,
    the same step is captured once as a CUDA graph (``graph``: default on CUDA) and replayed, one
    launch a step. Each step writes its ids into an output buffer and feeds them back on the device;
    the host reads the buffer every ``EOS_CHECK_STEPS`` steps and stops once every row has emitted
    EOS. Finished rows stay in the batch (their later ids are never read); rows never influence
    each other.

    The cache starts at ``STATIC_FIRST`` positions and doubles when full (a copy and a new capture,
    after ``WARMUP_STEPS`` eager steps at each size), so a step attends over at most twice the
    positions written. With ``cache_budget`` (bytes) the rows are decoded in groups whose caches
    fit it even while they grow to ``max_tokens`` (old and new storage alive together: at most
    2 · max_tokens positions a row; at least one row a group). The caller keeps ``max_tokens`` within
    the decoder's position table (every adapter checks).
    """
    b = memory.shape[0]
    if b == 0 or max_tokens <= 0:
        return [[] for _ in range(b)]
    group = b
    if cache_budget is not None:
        # a row's worst moment: growing to max_tokens, its old storage (< max_tokens) still alive
        per_row = model.decoder.init_cache(memory[:1]).row_bytes(2 * max_tokens)
        group = max(1, min(b, cache_budget // per_row))
    out: list[list[int]] = []
    for start in range(0, b, group):
        done_before = len(out)

        def finished_here(rows: int, base: int = done_before) -> None:
            if on_finished is not None:
                on_finished(base + rows)

        out += _static_group(model, memory[start:start + group], max_tokens, start_id, eos_id, first_eos_step,
                             on_step, finished_here, memory.is_cuda if graph is None else graph,
                             STATIC_FIRST if first_positions is None else first_positions)
    return out


def _static_group(model: T5, memory: Tensor, max_tokens: int, start_id: int, eos_id: int | None,
                  first_eos_step: int, on_step: Callable[[int, int], None] | None,
                  on_finished: Callable[[int], None], graph: bool, first_positions: int) -> list[list[int]]:
    b, device = memory.shape[0], memory.device
    cache = StaticKVCache(model.decoder.init_cache(memory).cross, min(max_tokens, first_positions))
    tokens = torch.full((b, 1), start_id, dtype=torch.long, device=device)
    ids = torch.zeros(b, max_tokens, dtype=torch.long, device=device)

    def step() -> None:  # reads `cache` when called: after a growth, the bigger one
        position = cache.length.clone()  # the decoder advances cache.length
        hidden = model.decoder(tokens, cache=cache)
        next_ids = model.lm_head(hidden[:, -1]).argmax(-1)  # first maximum on ties, like HF
        ids.index_copy_(1, position, next_ids[:, None])
        tokens.copy_(next_ids[:, None])

    current = torch.cuda.current_stream(device) if graph else None
    side = torch.cuda.Stream(device) if graph else None  # warm-up steps run there, as torch.cuda.graph asks
    run, stage = step, 0  # stage: first step at the cache's present capacity
    lengths: list[int | None] = [None] * b
    finished = 0
    for s in range(max_tokens):
        if s == cache.capacity:  # full: continue in storage twice as long, under a new graph
            cache = cache.grown(min(max_tokens, 2 * cache.capacity))
            run, stage = step, s
        if graph and s == stage + WARMUP_STEPS:  # (the current stream already waits on the warm-up)
            captured = torch.cuda.CUDAGraph()
            # thread_local: another request decoding on another thread meanwhile is not disturbed
            with torch.cuda.graph(captured, capture_error_mode="thread_local"):
                step()
            run = captured.replay
        if graph and s < stage + WARMUP_STEPS:
            side.wait_stream(current)
            with torch.cuda.stream(side):
                step()
            current.wait_stream(side)
        else:
            run()
        if on_step is not None:
            on_step(s, b - finished)
        if eos_id is not None and (s + 1 == max_tokens or (s + 1) % EOS_CHECK_STEPS == 0):
            new = _first_eos(ids[:, :s + 1].cpu(), lengths, eos_id, first_eos_step)
            if new:
                finished += new
                on_finished(finished)
            if finished == b:
                break
    host = ids.cpu()
    if finished < b:
        on_finished(b)  # rows that ran to max_tokens
    return [host[r, :lengths[r] or max_tokens].tolist() for r in range(b)]


def _first_eos(ids: Tensor, lengths: list[int | None], eos_id: int, first_eos_step: int) -> int:
    """Record in ``lengths`` (ids up to and including it) each unfinished row's first EOS at a step
    ≥ ``first_eos_step`` among ``ids`` [B, steps] (on the host); return how many rows finished."""
    hits = ids == eos_id
    hits[:, :first_eos_step] = False
    new = 0
    for r in hits.any(1).nonzero().squeeze(1).tolist():
        if lengths[r] is None:
            lengths[r] = int(hits[r].nonzero()[0]) + 1
            new += 1
    return new


@dataclass
class _Rows:
    """Rows decoding together: original row indices, the ids they feed next, which have emitted
    EOS (kept in until an eighth of the batch has), their decoder state and the next step."""

    rows: Tensor
    tokens: Tensor
    finished: Tensor
    state: DecodeState
    step: int
    live: int = field(init=False)  # rows not finished: kept as a count, not re-summed every step

    def __post_init__(self) -> None:
        self.live = int((~self.finished).sum())

    def finish(self, done: Tensor) -> int:
        """Mark rows ``done`` finished (returns how many); drop the finished ones once they make up
        an eighth."""
        n = int(done.sum())
        self.finished |= done
        self.live -= n
        if self.live and 8 * int(self.finished.sum()) >= self.rows.numel():
            self.select((~self.finished).nonzero().squeeze(1), None)
        return n

    def cache_bytes(self) -> int:
        cache = self.state.cache
        return 0 if cache is None else self.rows.numel() * cache.row_bytes(cache.capacity)

    def grows_next(self) -> bool:
        """Whether the next step grows the self-attention storage (for every row)."""
        cache = self.state.cache
        return cache is not None and cache.length == cache.capacity

    def split_to_fit(self, budget: int) -> _Rows | None:
        """Before the storage grows: if it would grow past ``budget`` bytes, keep here as many
        live rows as fit and return the others, set aside (finished rows are dropped)."""
        cache = self.state.cache
        now, grown = cache.row_bytes(cache.capacity), cache.row_bytes(cache.storage(cache.capacity + 1))
        if self.rows.numel() * grown <= budget:
            return None
        live = (~self.finished).nonzero().squeeze(1)
        # fit rows grow while the other live ones wait at their current size:
        # fit · grown + (live − fit) · now ≤ budget
        fit = max(1, int((budget - self.live * now) // (grown - now)))
        if fit >= self.live:
            self.select(live, None)  # dropping the finished rows is enough
            return None
        return self.select(live[:fit], live[fit:])

    def select(self, keep: Tensor, move: Tensor | None) -> _Rows | None:
        """Keep rows ``keep``; move rows ``move`` (if given) into new rows at the same step."""
        moved = self.state.split(keep, move)
        out = None
        if move is not None:
            out = _Rows(rows=self.rows[move], tokens=self.tokens[move], finished=self.finished[move],
                        state=moved, step=self.step)
        self.rows, self.tokens, self.finished = self.rows[keep], self.tokens[keep], self.finished[keep]
        self.live = int((~self.finished).sum())
        return out


@dataclass
class DecodeState:
    """What a greedy decode carries per batch row: the KV cache, or (uncached) the encoder
    output and every id so far."""

    cache: KVCache | None = None
    memory: Tensor | None = None
    history: Tensor | None = None

    def split(self, keep: Tensor, move: Tensor | None) -> DecodeState | None:
        """Keep rows ``keep``; return rows ``move`` (if given) as a new state."""
        if self.cache is not None:
            moved = self.cache.split(keep, move)
            return None if move is None else DecodeState(cache=moved)
        out = None if move is None else DecodeState(memory=self.memory[move], history=self.history[move])
        self.memory, self.history = self.memory[keep], self.history[keep]
        return out
