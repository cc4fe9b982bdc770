// The interactive piano-roll player: one transport for the whole page, one canvas roll per model.
// Runs as a gr.HTML component's js_on_load body: `element`, `props` and `watch` come from Gradio.
// props.value is the JSON string made by mt3_demo/player.py (see its docstring for the format).
//
// Drawing is split in two layers per roll so a 20 000-note roll stays smooth while playing:
// a static layer (grid, notes) redrawn only when the view changes (zoom, scroll, hidden
// instruments, diff toggle), and a per-frame layer (static copy + notes under the playhead +
// playhead line). The playhead time is read from the audio element every animation frame, so it
// cannot drift from what is heard.
(function () {
  const host = element.querySelector(".mt3-player") || element;
  const NAMES = ["C", "C\u266f", "D", "D\u266f", "E", "F", "F\u266f", "G", "G\u266f", "A", "A\u266f", "B"];
  const DIFF_COLORS = { matched: "#2ca02c", extra: "#d62728", missed: "#555555" };
  const MAX_PPS = 800; // pixels per second at full zoom
  const ROLL_HEIGHT = 200; // CSS px
  const AXIS_HEIGHT = 16;
  const DRUM_ROW = 13;
  const SEEK_STEP = 5; // seconds, arrow keys
  let player = null;

  function pitchName(p) { return NAMES[p % 12] + (Math.floor(p / 12) - 1); }
  function fmtTime(t) {
    const m = Math.floor(t / 60), s = t - 60 * m;
    return m + ":" + (s < 10 ? "0" : "") + s.toFixed(1);
  }
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fileUrl(path) {
    const cfg = window.gradio_config || {};
    const root = String(cfg.root || (location.origin + location.pathname)).replace(/\/+$/, "");
    return root + "/gradio_api/file=" + path.split("/").map(encodeURIComponent).join("/");
  }

  // Columns → typed arrays, plus per-instrument index lists sorted by onset (for range queries).
  function decode(cols) {
    const n = cols.t.length;
    const on = new Float64Array(n), off = new Float64Array(n);
    const pitch = new Uint8Array(n), vel = new Uint8Array(n), inst = new Uint16Array(n);
    let ms = 0, maxDur = 0.05;
    for (let k = 0; k < n; k++) {
      ms += cols.t[k];
      on[k] = ms / 1000; off[k] = (ms + cols.d[k]) / 1000;
      pitch[k] = cols.p[k]; vel[k] = cols.v[k]; inst[k] = cols.i[k];
      maxDur = Math.max(maxDur, off[k] - on[k]);
    }
    return { n, on, off, pitch, vel, inst, maxDur };
  }
  function lowerBound(arr, x) { // first index with arr[i] >= x
    let lo = 0, hi = arr.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (arr[mid] < x) lo = mid + 1; else hi = mid; }
    return lo;
  }

  // resume: what the previous player of this page was doing ({t, playing, source, diff, mode}), so a
  // roll arriving while someone listens neither stops nor rewinds the sound.
  function createPlayer(root, data, resume) {
    // cacheLayers=false redraws every note every frame: the naive baseline of bench/bench_player.py.
    const state = { pps: 1, viewStart: 0, playing: false, pos: 0, pendingSeek: null, diff: false,
                    mode: Object.keys(data.diff_modes || {})[0] || null, raf: 0, stats: [], cacheLayers: true };
    const duration = Math.max(data.duration || 0, 0.001);
    const instruments = data.instruments || [];
    const ref = data.reference ? decode(data.reference.notes) : null;
    root.innerHTML = "";
    root.classList.add("mt3-player-ready");

    // ---------------------------------------------------------------- transport
    const bar = el("div", { class: "mt3-transport", role: "toolbar", "aria-label": "Transport" });
    const play = el("button", { class: "mt3-btn mt3-play", "data-testid": "transport-play", type: "button",
                                "aria-label": "Play" }, "\u25b6");
    const readout = el("span", { class: "mt3-time", "data-testid": "transport-time" }, "0:00.0 / " + fmtTime(duration));
    const source = el("select", { class: "mt3-source", "data-testid": "transport-source", "aria-label": "Audio source" });
    (data.sources || []).forEach((s, k) => source.appendChild(el("option", { value: String(k) }, s.label || s.id)));
    const zoomOut = el("button", { class: "mt3-btn", type: "button", "data-testid": "zoom-out", "aria-label": "Zoom out" }, "\u2212");
    const zoomIn = el("button", { class: "mt3-btn", type: "button", "data-testid": "zoom-in", "aria-label": "Zoom in" }, "+");
    const zoomFit = el("button", { class: "mt3-btn", type: "button", "data-testid": "zoom-fit", "aria-label": "Show all" }, "\u2194");
    bar.append(play, readout, source, zoomOut, zoomIn, zoomFit);
    let diffBox = null, modeSel = null;
    if (ref) {
      const lab = el("label", { class: "mt3-diff-toggle" });
      diffBox = el("input", { type: "checkbox", "data-testid": "diff-toggle" });
      lab.append(diffBox, document.createTextNode(" Diff vs " + (data.reference.name || "reference")));
      modeSel = el("select", { class: "mt3-diff-mode", "data-testid": "diff-mode", "aria-label": "Matching" });
      for (const m in data.diff_modes) modeSel.appendChild(el("option", { value: m }, data.diff_modes[m]));
      bar.append(lab, modeSel);
    }
    const audio = el("audio", { preload: "auto", class: "mt3-audio" });
    const message = el("div", { class: "mt3-message", role: "status" });
    root.append(bar, audio, message);
    const tooltip = el("div", { class: "mt3-tooltip", "data-testid": "player-tooltip", role: "tooltip" });
    tooltip.hidden = true;

    // ---------------------------------------------------------------- rolls
    const rolls = data.rolls.map((r) => buildRoll(r));
    root.append(tooltip);
    if (!rolls.length) root.append(el("div", { class: "mt3-empty", "data-testid": "rolls-pending" },
      "Each model's piano roll appears here as it finishes; \u25b6 plays the original meanwhile."));

    function buildRoll(r) {
      const notes = decode(r.notes);
      const byInst = new Map(); // instrument → sorted note indices
      for (let k = 0; k < notes.n; k++) {
        if (!byInst.has(notes.inst[k])) byInst.set(notes.inst[k], []);
        byInst.get(notes.inst[k]).push(k);
      }
      const box = el("div", { class: "mt3-roll", "data-testid": "roll-" + r.id, "data-playhead": "0.000" });
      const head = el("div", { class: "mt3-roll-head" });
      head.append(el("span", { class: "mt3-roll-name" }, r.name));
      if (!notes.n) head.append(el("span", { class: "mt3-no-notes", "data-testid": "no-notes-" + r.id }, "no notes"));
      const legend = el("div", { class: "mt3-legend", "data-testid": "legend-" + r.id });
      const diffLegend = el("div", { class: "mt3-diff-legend", "data-testid": "diff-legend-" + r.id });
      diffLegend.hidden = true;
      head.append(legend, diffLegend);
      const scroller = el("div", { class: "mt3-scroller" });
      const spacer = el("div", { class: "mt3-spacer" });
      const canvas = el("canvas", { class: "mt3-canvas" });
      spacer.append(canvas); scroller.append(spacer); box.append(head, scroller);
      root.append(box);
      const roll = { r, notes, byInst, box, scroller, spacer, canvas, legend, diffLegend,
                     hidden: new Set(), layer: document.createElement("canvas"), dirty: true, width: 0, lastHead: "" };
      const entries = [...byInst.keys()].sort((a, b) => (instruments[a].drum - instruments[b].drum) || (a - b));
      for (const i of entries) {
        const info = instruments[i];
        const item = el("button", { type: "button", class: "mt3-legend-item", "aria-pressed": "true",
                                    "data-instrument": info.name });
        const sw = el("span", { class: "mt3-swatch" }); sw.style.background = info.color;
        item.append(sw, document.createTextNode(info.name + " \u00b7 " + byInst.get(i).length));
        item.addEventListener("click", () => {
          if (roll.hidden.has(i)) roll.hidden.delete(i); else roll.hidden.add(i);
          item.setAttribute("aria-pressed", String(!roll.hidden.has(i)));
          item.classList.toggle("off", roll.hidden.has(i));
          roll.dirty = true; hideTooltip();
        });
        legend.append(item);
      }
      // Vertical layout: pitched rows on top, a drum lane (one row per kind present) below.
      const pitched = [], kinds = new Set();
      for (let k = 0; k < notes.n; k++) {
        if (instruments[notes.inst[k]].drum) kinds.add(data.drum_kind_of[notes.pitch[k]]); else pitched.push(notes.pitch[k]);
      }
      if (ref) for (let k = 0; k < ref.n; k++) {
        if (instruments[ref.inst[k]].drum) kinds.add(data.drum_kind_of[ref.pitch[k]]); else pitched.push(ref.pitch[k]);
      }
      let lo = pitched.length ? Math.min(...pitched) : 60, hi = pitched.length ? Math.max(...pitched) : 72;
      const pad = Math.max(2, Math.floor((24 - (hi - lo)) / 2));
      roll.lo = lo - pad; roll.hi = hi + pad;
      roll.kinds = [...kinds].sort((a, b) => b - a); // kick at the bottom, as in the PNG
      roll.drumLane = roll.kinds.length ? roll.kinds.length * DRUM_ROW + 6 : 0;
      roll.hasPitched = pitched.length > 0 || !roll.kinds.length;
      canvas.addEventListener("click", (ev) => seek(timeAt(roll, ev)));
      canvas.addEventListener("pointermove", (ev) => hover(roll, ev));
      canvas.addEventListener("pointerleave", hideTooltip);
      scroller.addEventListener("scroll", () => onScroll(roll));
      scroller.addEventListener("wheel", (ev) => {
        if (!ev.ctrlKey) return; // plain wheel scrolls the page; ctrl+wheel (and trackpad pinch) zooms
        ev.preventDefault();
        zoom(Math.exp(-ev.deltaY * 0.002), timeAt(roll, ev), ev.clientX - scroller.getBoundingClientRect().left);
      }, { passive: false });
      // Two-finger pinch on a touch screen zooms around the fingers' midpoint (one finger still pans).
      let pinch = null;
      const spread = (ts) => Math.abs(ts[0].clientX - ts[1].clientX);
      canvas.addEventListener("touchstart", (ev) => { if (ev.touches.length === 2) pinch = spread(ev.touches); }, { passive: true });
      canvas.addEventListener("touchmove", (ev) => {
        if (ev.touches.length !== 2 || !pinch) return;
        ev.preventDefault();
        const now = spread(ev.touches), mid = (ev.touches[0].clientX + ev.touches[1].clientX) / 2;
        if (now > 0 && Math.abs(now - pinch) > 2) {
          zoom(now / pinch, timeAt(roll, { clientX: mid }), mid - scroller.getBoundingClientRect().left);
          pinch = now;
        }
      }, { passive: false });
      canvas.addEventListener("touchend", () => { pinch = null; }, { passive: true });
      return roll;
    }

    // ---------------------------------------------------------------- geometry
    function layout(roll) {
      const w = roll.scroller.clientWidth;
      if (!w) return false;
      const dpr = window.devicePixelRatio || 1;
      if (w !== roll.width) {
        roll.width = w;
        for (const c of [roll.canvas, roll.layer]) { c.width = Math.round(w * dpr); c.height = Math.round(ROLL_HEIGHT * dpr); }
        roll.canvas.style.width = w + "px"; roll.canvas.style.height = ROLL_HEIGHT + "px";
        roll.dirty = true;
      }
      roll.spacer.style.width = Math.max(w, Math.ceil(duration * state.pps)) + "px";
      return true;
    }
    function rowY(roll, pitch) { // top of a pitch row, CSS px
      const top = 4, bottom = ROLL_HEIGHT - AXIS_HEIGHT - roll.drumLane;
      const h = (bottom - top) / (roll.hi - roll.lo + 1);
      return { y: top + (roll.hi - pitch) * h, h };
    }
    function drumY(roll, kind) {
      const k = roll.kinds.indexOf(kind);
      return ROLL_HEIGHT - AXIS_HEIGHT - roll.drumLane + 3 + k * DRUM_ROW;
    }
    function noteRect(roll, set, k) { // x, y, w, h of note k of a decoded set, CSS px
      const isDrum = instruments[set.inst[k]].drum;
      const x = (set.on[k] - state.viewStart) * state.pps;
      if (isDrum) return { x: x - 1.5, y: drumY(roll, data.drum_kind_of[set.pitch[k]]), w: 3, h: DRUM_ROW - 2, drum: true };
      const { y, h } = rowY(roll, set.pitch[k]);
      return { x, y: y + h * 0.08, w: Math.max(2, (set.off[k] - set.on[k]) * state.pps), h: Math.max(1, h * 0.84), drum: false };
    }
    function timeAt(roll, ev) {
      const rect = roll.canvas.getBoundingClientRect();
      return Math.min(duration, Math.max(0, state.viewStart + (ev.clientX - rect.left) / state.pps));
    }
    function visibleRange(set, idx, t0, t1, maxDur) { // indices (into idx) of notes overlapping [t0, t1]
      const onsets = idx.onsets || (idx.onsets = Float64Array.from(idx, (k) => set.on[k]));
      return [lowerBound(onsets, t0 - maxDur), lowerBound(onsets, t1 + 1e-9)];
    }

    // ---------------------------------------------------------------- drawing
    function diffFlags(roll) {
      if (!state.diff || !state.mode || !roll.r.diff) return null;
      return roll.r.diff[state.mode];
    }
    function drawStatic(roll) {
      const dpr = window.devicePixelRatio || 1;
      const ctx = roll.layer.getContext("2d");
      const w = roll.width, t0 = state.viewStart, t1 = t0 + w / state.pps;
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, w, ROLL_HEIGHT);
      if (roll.drumLane) { ctx.fillStyle = "#f3f3f3"; ctx.fillRect(0, ROLL_HEIGHT - AXIS_HEIGHT - roll.drumLane, w, roll.drumLane); }
      // Octave lines (C of each octave) and time grid.
      ctx.fillStyle = "#e6e6e6";
      if (roll.hasPitched) for (let p = roll.lo; p <= roll.hi; p++) if (p % 12 === 0) ctx.fillRect(0, rowY(roll, p).y + rowY(roll, p).h, w, 1);
      const steps = [0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300];
      const step = steps.find((s) => s * state.pps >= 70) || 600;
      ctx.font = "10px sans-serif"; ctx.textBaseline = "middle";
      for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
        const x = Math.round((t - t0) * state.pps);
        ctx.fillStyle = "#ececec"; ctx.fillRect(x, 0, 1, ROLL_HEIGHT - AXIS_HEIGHT);
        ctx.fillStyle = "#666"; ctx.fillText(step < 1 ? t.toFixed(2) : fmtTime(t).replace(/\.0$/, ""), x + 2, ROLL_HEIGHT - AXIS_HEIGHT / 2);
      }
      const flags = diffFlags(roll);
      const set = roll.notes;
      for (const [i, idx] of roll.byInst) {
        if (roll.hidden.has(i)) continue;
        const [a, b] = visibleRange(set, idx, t0, t1, set.maxDur);
        if (!flags) { // one fill style per instrument: a single path per instrument and frame
          ctx.fillStyle = instruments[i].color; ctx.beginPath();
          for (let j = a; j < b; j++) { const q = noteRect(roll, set, idx[j]); ctx.rect(q.x, q.y, q.w, q.h); }
          ctx.fill();
        } else {
          for (const kind of ["matched", "extra"]) {
            const want = kind === "matched" ? "1" : "0";
            ctx.fillStyle = DIFF_COLORS[kind]; ctx.beginPath();
            for (let j = a; j < b; j++) {
              if (flags.est[idx[j]] !== want) continue;
              const q = noteRect(roll, set, idx[j]); ctx.rect(q.x, q.y, q.w, q.h);
            }
            ctx.fill();
          }
        }
      }
      if (flags && ref) { // missed reference notes: outlines only
        ctx.strokeStyle = DIFF_COLORS.missed; ctx.lineWidth = 1.2; ctx.beginPath();
        const a = lowerBound(ref.on, t0 - ref.maxDur), b = lowerBound(ref.on, t1 + 1e-9);
        for (let k = a; k < b; k++) {
          if (flags.ref[k] === "1") continue;
          const q = noteRect(roll, ref, k); ctx.rect(q.x + 0.5, q.y + 0.5, Math.max(1, q.w - 1), Math.max(1, q.h - 1));
        }
        ctx.stroke();
      }
      if (roll.hasPitched) { // pitch labels on the Cs, over the notes
        ctx.fillStyle = "rgba(255,255,255,0.75)"; ctx.fillRect(0, 0, 26, ROLL_HEIGHT - AXIS_HEIGHT - roll.drumLane);
        ctx.fillStyle = "#555";
        for (let p = roll.lo; p <= roll.hi; p++) if (p % 12 === 0) { const r = rowY(roll, p); ctx.fillText(pitchName(p), 2, r.y + r.h / 2); }
      }
      for (const kind of roll.kinds) ctx.fillText(data.drum_kinds[kind], 2, drumY(roll, kind) + DRUM_ROW / 2 - 1);
      roll.dirty = false;
    }
    function activeNotes(roll, t) { // indices of visible notes sounding at t
      const set = roll.notes, out = [];
      for (const [i, idx] of roll.byInst) {
        if (roll.hidden.has(i)) continue;
        const drum = instruments[i].drum;
        const [a, b] = visibleRange(set, idx, t - (drum ? 0.08 : 0), t, drum ? 0 : set.maxDur);
        for (let j = a; j < b; j++) {
          const k = idx[j];
          if (drum ? t - set.on[k] <= 0.08 : set.off[k] >= t) out.push(k);
        }
      }
      return out;
    }
    function drawFrame(roll, t) {
      if (!layout(roll)) return;
      if (roll.dirty || !state.cacheLayers) drawStatic(roll);
      const dpr = window.devicePixelRatio || 1;
      const ctx = roll.canvas.getContext("2d");
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.drawImage(roll.layer, 0, 0);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const active = activeNotes(roll, t);
      if (active.length) { // notes under the playhead: lit up and outlined
        ctx.fillStyle = "rgba(255,255,255,0.45)"; ctx.strokeStyle = "#111"; ctx.lineWidth = 1.5; ctx.beginPath();
        for (const k of active) { const q = noteRect(roll, roll.notes, k); ctx.rect(q.x, q.y, q.w, q.h); }
        ctx.fill(); ctx.stroke();
      }
      const x = (t - state.viewStart) * state.pps;
      ctx.fillStyle = "#e8491d"; ctx.fillRect(Math.round(x) - 1, 0, 2, ROLL_HEIGHT - AXIS_HEIGHT);
      const head = t.toFixed(3);
      if (head !== roll.lastHead) { roll.box.setAttribute("data-playhead", head); roll.lastHead = head; }
    }

    // ---------------------------------------------------------------- time, follow, loop
    function now() {
      if (state.pendingSeek !== null || !(audio.readyState >= 1)) return state.pos;
      return audio.currentTime;
    }
    function follow(t) { // keep the playhead on screen while playing: turn the page at 90 %
      const w = rolls.length ? rolls[0].width : 0;
      if (!w || duration * state.pps <= w) return;
      const x = t * state.pps - rolls[0].scroller.scrollLeft;
      if (x < 0 || x > 0.9 * w) setScroll(Math.max(0, t * state.pps - 0.1 * w));
    }
    function frame() {
      state.raf = requestAnimationFrame(frame);
      if (!root.isConnected) return;
      const begin = performance.now();
      const t = now();
      state.pos = t;
      if (state.playing) follow(t);
      let drew = false;
      for (const roll of rolls) if (state.playing || roll.dirty || roll.drawnAt !== t) { drawFrame(roll, t); roll.drawnAt = t; drew = true; }
      readout.textContent = fmtTime(t) + " / " + fmtTime(duration);
      if (drew && state.playing) { // draw-time statistics for bench/bench_player.py
        state.stats.push(performance.now() - begin);
        if (state.stats.length > 5000) state.stats.shift();
      }
    }

    // ---------------------------------------------------------------- actions
    function setSource(k, keepPlaying) {
      const s = (data.sources || [])[k];
      if (!s) return;
      const t = now();
      state.pendingSeek = t; state.pos = t;
      audio.src = s.url || fileUrl(s.path);
      audio.load();
      if (keepPlaying) audio.play().catch(() => {});
    }
    audio.addEventListener("loadedmetadata", () => {
      if (state.pendingSeek !== null) { audio.currentTime = Math.min(state.pendingSeek, audio.duration || state.pendingSeek); }
      state.pendingSeek = null;
    });
    audio.addEventListener("play", () => { state.playing = true; play.textContent = "\u275a\u275a"; play.setAttribute("aria-label", "Pause"); });
    audio.addEventListener("pause", () => { state.playing = false; play.textContent = "\u25b6"; play.setAttribute("aria-label", "Play"); });
    audio.addEventListener("ended", () => { state.playing = false; });
    // One transport: whatever else on the page plays (the recording's own input player) pauses this
    // one, and this one pauses it.
    audio.addEventListener("play", () => {
      for (const m of document.querySelectorAll("audio, video")) if (m !== audio && !m.paused) m.pause();
    });
    const onOtherPlay = (ev) => { if (ev.target !== audio && !audio.paused) audio.pause(); };
    document.addEventListener("play", onOtherPlay, true);
    audio.addEventListener("error", () => { message.textContent = "This audio source could not be loaded."; });
    function toggle() {
      if (!data.sources || !data.sources.length) { message.textContent = "No audio to play."; return; }
      if (audio.paused) audio.play().then(() => { message.textContent = ""; }).catch((e) => { message.textContent = "Cannot play: " + e.message; });
      else audio.pause();
    }
    function seek(t) {
      t = Math.min(duration, Math.max(0, t));
      state.pos = t;
      if (audio.readyState >= 1 && state.pendingSeek === null) audio.currentTime = t; else state.pendingSeek = t;
      for (const roll of rolls) roll.drawnAt = -1;
    }
    function setScroll(x) {
      for (const roll of rolls) roll.scroller.scrollLeft = x;
      state.viewStart = x / state.pps;
      for (const roll of rolls) roll.dirty = true;
    }
    function onScroll(roll) { // one time axis: every roll scrolls together
      const x = roll.scroller.scrollLeft;
      if (Math.abs(x / state.pps - state.viewStart) < 1e-9) return;
      for (const other of rolls) if (other !== roll && other.scroller.scrollLeft !== x) other.scroller.scrollLeft = x;
      state.viewStart = x / state.pps;
      for (const r of rolls) r.dirty = true;
      hideTooltip();
    }
    function fitPps() { return (rolls.length && rolls[0].scroller.clientWidth ? rolls[0].scroller.clientWidth : 800) / duration; }
    function zoom(factor, anchorT, anchorX) {
      const fit = fitPps();
      state.fit = fit;
      const pps = Math.min(MAX_PPS, Math.max(fit, state.pps * factor));
      if (anchorT === undefined) { anchorT = now(); anchorX = (anchorT - state.viewStart) * state.pps; }
      state.pps = pps;
      for (const roll of rolls) layout(roll);
      setScroll(Math.max(0, anchorT * pps - anchorX));
    }
    play.addEventListener("click", toggle);
    source.addEventListener("change", () => setSource(Number(source.value), state.playing));
    zoomIn.addEventListener("click", () => zoom(2));
    zoomOut.addEventListener("click", () => zoom(0.5));
    zoomFit.addEventListener("click", () => zoom(1e-9));
    if (diffBox) {
      const refresh = () => {
        state.diff = diffBox.checked; state.mode = modeSel.value;
        for (const roll of rolls) {
          roll.dirty = true;
          const f = roll.r.diff && roll.r.diff[state.mode];
          roll.diffLegend.hidden = !state.diff || !f;
          roll.legend.hidden = state.diff && !!f;
          if (f) {
            roll.diffLegend.innerHTML = "";
            for (const kind of ["matched", "extra", "missed"]) {
              const item = el("span", { class: "mt3-legend-item mt3-diff-" + kind, "data-kind": kind, "data-count": String(f[kind]) });
              const sw = el("span", { class: "mt3-swatch" + (kind === "missed" ? " outline" : "") });
              sw.style[kind === "missed" ? "borderColor" : "background"] = DIFF_COLORS[kind];
              item.append(sw, document.createTextNode(kind + " \u00b7 " + f[kind]));
              roll.diffLegend.append(item);
            }
          }
        }
      };
      diffBox.addEventListener("change", refresh);
      modeSel.addEventListener("change", refresh);
    }
    function onKey(ev) {
      if (!root.isConnected || ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey) return;
      const tag = (ev.target && ev.target.tagName) || "";
      if (/^(INPUT|TEXTAREA|SELECT)$/.test(tag) || (ev.target && ev.target.isContentEditable)) return;
      if (ev.key === " " || ev.code === "Space") { if (tag === "BUTTON") return; ev.preventDefault(); toggle(); }
      else if (ev.key === "ArrowLeft") { ev.preventDefault(); seek(now() - SEEK_STEP); }
      else if (ev.key === "ArrowRight") { ev.preventDefault(); seek(now() + SEEK_STEP); }
    }
    document.addEventListener("keydown", onKey);

    // ---------------------------------------------------------------- tooltip
    function hideTooltip() { tooltip.hidden = true; }
    function hover(roll, ev) {
      const rect = roll.canvas.getBoundingClientRect();
      const x = ev.clientX - rect.left, y = ev.clientY - rect.top;
      const t = state.viewStart + x / state.pps, slack = 3 / state.pps;
      const set = roll.notes;
      let found = -1;
      for (const [i, idx] of roll.byInst) {
        if (roll.hidden.has(i)) continue;
        const [a, b] = visibleRange(set, idx, t - slack, t + slack, set.maxDur);
        for (let j = a; j < b && found < 0; j++) {
          const q = noteRect(roll, set, idx[j]);
          if (x >= q.x - 2 && x <= q.x + q.w + 2 && y >= q.y - 1 && y <= q.y + q.h + 1) found = idx[j];
        }
      }
      if (found < 0) { hideTooltip(); return; }
      const info = instruments[set.inst[found]];
      const p = set.pitch[found];
      const name = info.drum ? data.drum_kinds[data.drum_kind_of[p]] + " (key " + p + ")" : pitchName(p);
      tooltip.textContent = name + " \u00b7 " + info.name + " \u00b7 " + set.on[found].toFixed(3) + "\u2013" +
        set.off[found].toFixed(3) + " s \u00b7 velocity " + set.vel[found];
      const hostRect = root.getBoundingClientRect();
      tooltip.hidden = false;
      tooltip.style.left = Math.max(0, Math.min(ev.clientX - hostRect.left + 12, hostRect.width - tooltip.offsetWidth)) + "px";
      tooltip.style.top = (ev.clientY - hostRect.top + 14) + "px";
    }

    // ---------------------------------------------------------------- start
    const resize = new ResizeObserver(() => {
      // A view showing the whole clip keeps showing it at the new width; a zoomed view keeps its zoom.
      const wasFit = !state.sized || Math.abs(state.pps - state.fit) < 1e-9;
      const fit = fitPps();
      if (wasFit || state.pps < fit) state.pps = fit;
      state.fit = fit; state.sized = true;
      for (const roll of rolls) { layout(roll); roll.dirty = true; }
      setScroll(Math.min(state.viewStart * state.pps, Math.max(0, duration * state.pps - (rolls[0] ? rolls[0].width : 0))));
    });
    for (const roll of rolls) resize.observe(roll.scroller);
    let first = 0, keepPlaying = false;
    if (resume) {
      const k = (data.sources || []).findIndex((s) => s.id === resume.source);
      if (k >= 0) { first = k; source.value = String(k); state.pos = resume.t; keepPlaying = resume.playing; }
      if (diffBox && resume.diff) { diffBox.checked = true; if (resume.mode in data.diff_modes) modeSel.value = resume.mode; diffBox.dispatchEvent(new Event("change")); }
    }
    if (data.sources && data.sources.length) setSource(first, keepPlaying);
    state.raf = requestAnimationFrame(frame);
    const api = {
      snapshot() {
        const s = (data.sources || [])[Number(source.value)];
        return { t: now(), playing: state.playing, source: s ? s.id : null, original: originalPath(data),
                 diff: !!(diffBox && diffBox.checked), mode: modeSel ? modeSel.value : null };
      },
      destroy() {
        cancelAnimationFrame(state.raf); resize.disconnect(); document.removeEventListener("keydown", onKey);
        document.removeEventListener("play", onOtherPlay, true); audio.pause(); audio.removeAttribute("src");
      },
      stats: state.stats, seek, toggle, audio, state,
      // Page coordinates of the centre of a roll's note (first one with this onset and pitch), or
      // null: lets the browser test and the benchmark point at a note without duplicating layout.
      locate(rollId, onset, pitch) {
        const roll = rolls.find((r) => r.r.id === rollId);
        if (!roll) return null;
        const set = roll.notes;
        for (let k = lowerBound(set.on, onset - 0.001); k < set.n && set.on[k] <= onset + 0.001; k++) {
          if (set.pitch[k] !== pitch) continue;
          const q = noteRect(roll, set, k), rect = roll.canvas.getBoundingClientRect();
          return { x: rect.left + q.x + Math.min(q.w / 2, 6), y: rect.top + q.y + q.h / 2 };
        }
        return null;
      },
      timeToX(t) { const rect = rolls[0].canvas.getBoundingClientRect(); return rect.left + (t - state.viewStart) * state.pps; },
    };
    root.__mt3Player = api;
    return api;
  }

  function originalPath(data) {
    const s = (data.sources || []).find((x) => x.id === "original");
    return s ? (s.path || s.url || null) : null;
  }

  function start() {
    let resume = null;
    if (player) { resume = player.snapshot(); player.destroy(); player = null; }
    let data = props.value;
    if (typeof data === "string") data = data.trim() ? JSON.parse(data) : null;
    if (!data || !data.rolls) {
      host.innerHTML = '<div class="mt3-empty">After Transcribe: the original recording and every model\'s ' +
        'piano roll, under one transport (\u25b6 / space to play, click a roll to seek).</div>';
      return;
    }
    // Another recording starts from the beginning; the same recording's update resumes.
    if (resume && (!resume.source || resume.original !== originalPath(data))) resume = null;
    player = createPlayer(host, data, resume);
  }
  watch("value", start);
  start();
})();
