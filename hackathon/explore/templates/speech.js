// hackathon explore, speech page: totals, alphabet/vocabulary/OOV, histograms and a paged table of every
// utterance (sort, filter, search) over window.EXPLORE (data.js). Waveform/spectrogram are drawn only when
// a row is opened; the character diff only for the rows of the visible page.
"use strict";
const D = window.EXPLORE;
const PAGE = 50;
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s == null ? "" : s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const fmt = (v, d = 3) => (v == null ? "" : (+v).toFixed(d).replace(/\.?0+$/, "") || "0");

const hasPred = D.rows.some((r) => r.pred), hasPred2 = D.rows.some((r) => r.pred2), hasTts = D.rows.some((r) => r.tts);
const COLUMNS = [
  {key: "id", label: "#", num: true, get: (r) => r.id},
  {key: "split", label: "split", get: (r) => r.split},
  {key: "speaker", label: "speaker", get: (r) => r.speaker},
  {key: "duration", label: "dur (s)", num: true, get: (r) => r.duration, show: (r) => fmt(r.duration, 2)},
  {key: "cps", label: "chars/s", num: true, get: (r) => r.cps, show: (r) => fmt(r.cps, 2)},
  {key: "text", label: hasPred ? "reference → prediction (diff)" : "text", get: (r) => r.text,
   show: (r) => (r.pred ? diffHtml(r.text, r.pred.pred) : esc(r.text))},
];
if (hasPred) COLUMNS.push({key: "cer", label: "CER", num: true, worst: true, get: (r) => (r.pred ? r.pred.cer : null), show: (r) => fmt(r.pred && r.pred.cer)},
                          {key: "wer", label: "WER", num: true, worst: true, get: (r) => (r.pred ? r.pred.wer : null), show: (r) => fmt(r.pred && r.pred.wer)});
if (hasPred2) COLUMNS.push({key: "text2", label: "compared run (diff)", get: (r) => (r.pred2 ? r.pred2.pred : null),
                            show: (r) => (r.pred2 ? diffHtml(r.text, r.pred2.pred) : "")},
                           {key: "cer2", label: "CER (compared)", num: true, worst: true, get: (r) => (r.pred2 ? r.pred2.cer : null), show: (r) => fmt(r.pred2 && r.pred2.cer)});
if (hasTts) COLUMNS.push({key: "dnsmos", label: "DNSMOS synth", num: true, get: (r) => (r.tts ? r.tts.dnsmos : null), show: (r) => fmt(r.tts && r.tts.dnsmos, 2)},
                         {key: "ref_dnsmos", label: "DNSMOS rec", num: true, get: (r) => (r.tts ? r.tts.ref_dnsmos : null), show: (r) => fmt(r.tts && r.tts.ref_dnsmos, 2)},
                         {key: "pesq", label: "PESQ", num: true, get: (r) => (r.tts ? r.tts.pesq : null), show: (r) => fmt(r.tts && r.tts.pesq, 2)});
COLUMNS.push({key: "outlier", label: "outlier", get: (r) => r.outlier, show: (r) => (r.outlier ? `<span class="warn">${esc(r.outlier)}</span>` : "")},
             {key: "audio", label: hasTts ? "recorded / synthesized" : "audio", get: () => null, nosort: true,
              show: (r) => `<audio preload="none" controls src="${esc(r.audio)}"></audio>` +
                (r.tts ? `<br><audio preload="none" controls src="${esc(r.tts.synth)}" class="synth"></audio>` : "")});

const state = {sort: null, dir: 1, page: 0, rows: D.rows.slice(), open: new Set()};

// ---- character diff: Levenshtein alignment, substitutions / insertions / deletions marked
function align(ref, hyp) {
  const a = Array.from(ref), b = Array.from(hyp), n = a.length, m = b.length;
  const d = Array.from({length: n + 1}, (_, i) => { const row = new Int32Array(m + 1); row[0] = i; return row; });
  for (let j = 0; j <= m; j++) d[0][j] = j;
  for (let i = 1; i <= n; i++) for (let j = 1; j <= m; j++)
    d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  const ops = [];
  let i = n, j = m;
  while (i > 0 || j > 0) {
    if (i > 0 && j > 0 && d[i][j] === d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1)) {
      ops.push({op: a[i - 1] === b[j - 1] ? "eq" : "sub", r: a[i - 1], h: b[j - 1]}); i--; j--;
    } else if (i > 0 && d[i][j] === d[i - 1][j] + 1) { ops.push({op: "del", r: a[i - 1]}); i--; }
    else { ops.push({op: "ins", h: b[j - 1]}); j--; }
  }
  return ops.reverse();
}
function diffHtml(ref, hyp) {
  const parts = align(ref, hyp || "").map((o) => {
    if (o.op === "eq") return esc(o.r);
    if (o.op === "sub") return `<span class="sub" title="said ${esc(o.r)}, recognised ${esc(o.h)}">${esc(o.h)}<small>${esc(o.r)}</small></span>`;
    if (o.op === "ins") return `<span class="ins" title="inserted">${esc(o.h)}</span>`;
    return `<span class="del" title="deleted">${esc(o.r)}</span>`;
  });
  return `<span class="diff">${parts.join("")}</span><br><span class="muted">${esc(ref)}</span>`;
}

// ---- filters, sort, pages
function apply() {
  const q = $("search").value.trim().toLowerCase(), split = $("split").value, spk = $("speaker").value;
  const errs = $("errors-only").checked, outl = $("outliers-only").checked;
  let rows = D.rows.filter((r) => (!split || r.split === split) && (!spk || r.speaker === spk)
    && (!errs || (r.pred && r.pred.cer > 0) || (r.pred2 && r.pred2.cer > 0)) && (!outl || r.outlier)
    && (!q || (r.text + " " + (r.pred ? r.pred.pred : "") + " " + r.speaker + " " + r.audio).toLowerCase().includes(q)));
  if (state.sort) {
    const col = COLUMNS.find((c) => c.key === state.sort), dir = state.dir;
    rows = rows.map((r, i) => [col.get(r), i, r]).sort((x, y) => {
      if (x[0] == null && y[0] == null) return x[1] - y[1];
      if (x[0] == null) return 1; if (y[0] == null) return -1;  // rows without a value last either way
      const c = col.num ? x[0] - y[0] : String(x[0]).localeCompare(String(y[0]));
      return c !== 0 ? c * dir : x[1] - y[1];
    }).map((x) => x[2]);
  }
  state.rows = rows;
  state.page = Math.min(state.page, Math.max(0, Math.ceil(rows.length / PAGE) - 1));
  render();
}
function render() {
  const start = state.page * PAGE, page = state.rows.slice(start, start + PAGE);
  $("count").textContent = `${state.rows.length} of ${D.rows.length} utterances`;
  $("header").innerHTML = COLUMNS.map((c) => `<th data-key="${c.key}" class="${state.sort === c.key ? (state.dir > 0 ? "sorted-asc" : "sorted-desc") : ""}">${esc(c.label)}</th>`).join("");
  const html = [];
  for (const r of page) {
    html.push(`<tr class="row" data-id="${r.id}">` + COLUMNS.map((c) => `<td class="${c.key}${c.num ? " num" : ""}">${c.show ? c.show(r) : esc(c.get(r))}</td>`).join("") + "</tr>");
    if (state.open.has(r.id)) html.push(`<tr class="detail" data-id="${r.id}"><td colspan="${COLUMNS.length}">${detailHtml(r)}</td></tr>`);
  }
  $("body").innerHTML = html.join("");
  for (const r of page) if (state.open.has(r.id)) drawVisuals(r);
  const pages = Math.max(1, Math.ceil(state.rows.length / PAGE));
  const pager = `<button data-go="0">«</button><button data-go="${state.page - 1}">‹</button> page ${state.page + 1} of ${pages} <button data-go="${state.page + 1}">›</button><button data-go="${pages - 1}">»</button>`;
  $("pager-top").innerHTML = $("pager-bottom").innerHTML = pager;
}
function detailHtml(r) {
  const t = r.tts;
  return `<div class="muted">${esc(r.audio)} ${t ? `· copy-synthesis: <audio preload="none" controls src="${esc(t.copy)}"></audio>` : ""}</div>` +
    `<div class="visual-msg muted" data-id="${r.id}">decoding audio…</div>` +
    `<canvas class="wave" data-id="${r.id}" width="900" height="90"></canvas><canvas class="spec" data-id="${r.id}" width="900" height="140"></canvas>`;
}

// ---- waveform and spectrogram from the decoded audio, on demand
const decoded = new Map();
async function drawVisuals(r) {
  const msg = document.querySelector(`.visual-msg[data-id="${r.id}"]`);
  try {
    if (!decoded.has(r.id)) {
      const buf = await (await fetch(r.audio)).arrayBuffer();
      const ctx = new (window.AudioContext || window.webkitAudioContext)();
      decoded.set(r.id, await ctx.decodeAudioData(buf));
      ctx.close();
    }
    const audio = decoded.get(r.id), samples = audio.getChannelData(0);
    drawWave(document.querySelector(`canvas.wave[data-id="${r.id}"]`), samples);
    drawSpec(document.querySelector(`canvas.spec[data-id="${r.id}"]`), samples);
    if (msg) msg.textContent = `${fmt(audio.duration, 2)} s, decoded at ${audio.sampleRate} Hz`;
  } catch (e) {
    if (msg) msg.textContent = "Waveform and spectrogram need the page served over http (browsers do not let a page opened from disk " +
      "read audio bytes): run `hackathon explore ... --serve`. The audio player works either way.";
  }
}
function drawWave(canvas, s) {
  if (!canvas) return;
  const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height, step = Math.max(1, Math.floor(s.length / w));
  g.fillStyle = "#fff"; g.fillRect(0, 0, w, h); g.strokeStyle = "#2563eb"; g.beginPath();
  for (let x = 0; x < w; x++) {
    let lo = 1, hi = -1;
    for (let i = x * step; i < Math.min(s.length, (x + 1) * step); i++) { if (s[i] < lo) lo = s[i]; if (s[i] > hi) hi = s[i]; }
    g.moveTo(x + 0.5, (1 - hi) * h / 2); g.lineTo(x + 0.5, (1 - lo) * h / 2);
  }
  g.stroke();
}
function fft(re, im) {  // in place, radix 2
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) { let bit = n >> 1; for (; j & bit; bit >>= 1) j ^= bit; j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; } }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = -2 * Math.PI / len, wr = Math.cos(ang), wi = Math.sin(ang);
    for (let i = 0; i < n; i += len) { let cr = 1, ci = 0;
      for (let k = 0; k < len / 2; k++) {
        const a = i + k, b = a + len / 2, tr = re[b] * cr - im[b] * ci, ti = re[b] * ci + im[b] * cr;
        re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;
        const nr = cr * wr - ci * wi; ci = cr * wi + ci * wr; cr = nr; } } }
}
function drawSpec(canvas, s) {
  if (!canvas) return;
  const N = 512, g = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  const frames = Math.max(1, Math.min(w, Math.floor((s.length - N) / 128) + 1)), hop = Math.max(1, Math.floor((s.length - N) / Math.max(1, frames - 1)));
  const img = g.createImageData(frames, N / 2), re = new Float32Array(N), im = new Float32Array(N);
  for (let f = 0; f < frames; f++) {
    for (let i = 0; i < N; i++) { const v = s[f * hop + i] || 0; re[i] = v * (0.5 - 0.5 * Math.cos(2 * Math.PI * i / (N - 1))); im[i] = 0; }
    fft(re, im);
    for (let k = 0; k < N / 2; k++) {
      const db = 10 * Math.log10(re[k] * re[k] + im[k] * im[k] + 1e-10), v = Math.max(0, Math.min(1, (db + 80) / 80));
      const p = ((N / 2 - 1 - k) * frames + f) * 4;
      img.data[p] = 255 * Math.min(1, v * 1.6); img.data[p + 1] = 255 * Math.max(0, v * 1.6 - 0.6); img.data[p + 2] = 255 * (0.4 * (1 - v)); img.data[p + 3] = 255;
    }
  }
  const tmp = document.createElement("canvas"); tmp.width = frames; tmp.height = N / 2; tmp.getContext("2d").putImageData(img, 0, 0);
  g.imageSmoothingEnabled = false; g.drawImage(tmp, 0, 0, w, h);
}

// ---- summary panels
function chips(el, pairs, oov) {
  el.innerHTML = pairs.map(([u, n]) => `<span class="${oov && oov.has(u) ? "oov" : ""}" title="${n}">${esc(u)} <small class="muted">${n}</small></span>`).join("");
}
function histogram(canvas, hist, label) {
  const g = canvas.getContext("2d"), w = canvas.width = canvas.clientWidth || 400, h = canvas.height = 140;
  const max = Math.max(1, ...hist.counts), bw = w / Math.max(1, hist.counts.length);
  hist.counts.forEach((c, i) => {
    const lo = hist.edges[i], hi = hist.edges[i + 1], out = hi < hist.outside[0] || lo > hist.outside[1];
    g.fillStyle = out ? "#dc2626" : "#60a5fa"; g.fillRect(i * bw + 1, h - 16 - (h - 24) * c / max, bw - 2, (h - 24) * c / max);
  });
  g.fillStyle = "#444"; g.font = "11px sans-serif";
  if (hist.edges.length) { g.fillText(fmt(hist.edges[0], 2), 2, h - 3); const t = fmt(hist.edges[hist.edges.length - 1], 2); g.fillText(t, w - g.measureText(t).width - 2, h - 3); }
  label.textContent = `red bars: outside ${fmt(hist.outside[0], 2)} … ${fmt(hist.outside[1], 2)} (median ± 3 robust SD); such rows are flagged "outlier"`;
}
function init() {
  const t = D.totals;
  $("sources").textContent = D.sources.join(" · ") + (D.compare ? ` — compared with ${D.compare}` : "");
  $("totals").innerHTML = `<span><b>${t.utterances}</b> utterances</span><span><b>${fmt(t.hours, 2)}</b> hours</span><span><b>${t.speakers}</b> speakers</span>` +
    Object.entries(t.splits).map(([k, v]) => `<span>${esc(k)}: ${v}</span>`).join("") +
    (t.with_predictions ? `<span><b>${t.with_predictions}</b> with predictions</span>` : "") + `<span class="warn">${t.outliers} outliers</span>`;
  const oovSet = D.oov ? new Set(D.oov.map((x) => x[0])) : null;
  chips($("alphabet"), D.alphabet, oovSet); $("alphabet-size").textContent = `(${D.alphabet.length} characters)`;
  chips($("vocabulary"), D.vocabulary); $("vocab-size").textContent = `(${D.vocabulary_size} units${D.vocabulary_size > D.vocabulary.length ? `, top ${D.vocabulary.length} shown` : ""})`;
  if (D.oov === null) $("oov").innerHTML = '<span class="muted">no model vocabulary in these inputs (an ASR run dir has one)</span>';
  else if (!D.oov.length) $("oov").innerHTML = '<span class="muted">none: every character is in the model vocabulary</span>';
  else chips($("oov"), D.oov, oovSet);
  histogram($("hist-duration"), D.histograms.duration, $("range-duration"));
  histogram($("hist-cps"), D.histograms.chars_per_second, $("range-cps"));
  for (const [id, key] of [["split", "split"], ["speaker", "speaker"]])
    [...new Set(D.rows.map((r) => r[key]).filter(Boolean))].sort().forEach((v) => $(id).insertAdjacentHTML("beforeend", `<option>${esc(v)}</option>`));
  $("header").addEventListener("click", (e) => {
    const key = e.target.dataset && e.target.dataset.key, col = COLUMNS.find((c) => c.key === key);
    if (!col || col.nosort) return;
    if (state.sort === key) state.dir = -state.dir; else { state.sort = key; state.dir = col.worst ? -1 : 1; }  // error columns: worst first
    apply();
  });
  $("body").addEventListener("click", (e) => {
    if (e.target.closest("audio")) return;
    const tr = e.target.closest("tr.row"); if (!tr) return;
    const id = +tr.dataset.id; state.open.has(id) ? state.open.delete(id) : state.open.add(id); render();
  });
  for (const p of ["pager-top", "pager-bottom"]) $(p).addEventListener("click", (e) => {
    if (e.target.dataset.go == null) return;
    const pages = Math.max(1, Math.ceil(state.rows.length / PAGE));
    state.page = Math.max(0, Math.min(pages - 1, +e.target.dataset.go)); render();
  });
  let timer = null;
  $("search").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => { state.page = 0; apply(); }, 150); });
  for (const id of ["split", "speaker", "errors-only", "outliers-only"]) $(id).addEventListener("change", () => { state.page = 0; apply(); });
  apply();
  document.body.dataset.ready = "1";
}
init();
