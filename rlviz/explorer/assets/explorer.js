/* rlviz explorer: every view follows one cursor (episode, step).
 * Data come as scripts that fill window.RLVIZ (manifest.js at load, episode_i.js when episode i
 * is first shown), so the page works from file:// with no server and no network. */
(function () {
  "use strict";
  const R = (window.RLVIZ = window.RLVIZ || {});
  R.episodes = R.episodes || {};
  const M = R.manifest;
  const $ = (id) => document.getElementById(id);
  const T0 = performance.now();

  // ------------------------------------------------------------------ colour tables
  const STOPS = {
    inferno: [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
      [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    rdbu: [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [247, 247, 247],
      [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]],
    viridis: [[68, 1, 84], [70, 50, 127], [54, 92, 141], [39, 127, 142], [31, 161, 135],
      [74, 194, 109], [159, 218, 58], [253, 231, 37]],
    // Attribution scales with hues the room never shows (the goal box is red; red-topped scales
    // vanished on it), like rlviz.video.draw's ATTRIBUTION_LUT and SIGNED_LUT.
    attr: [[10, 40, 60], [5, 130, 158], [0, 220, 255], [118, 238, 255], [235, 255, 255]],
    attrSigned: [[255, 70, 255], [120, 120, 128], [0, 235, 255]],
  };
  function lut(name) {
    const s = STOPS[name], out = new Uint8Array(256 * 3);
    for (let i = 0; i < 256; i++) {
      const x = (i / 255) * (s.length - 1), k = Math.min(Math.floor(x), s.length - 2), f = x - k;
      for (let c = 0; c < 3; c++) out[i * 3 + c] = Math.round(s[k][c] * (1 - f) + s[k + 1][c] * f);
    }
    return out;
  }
  const LUT = { inferno: lut("inferno"), rdbu: lut("rdbu"), viridis: lut("viridis"),
    attr: lut("attr"), attrSigned: lut("attrSigned") };
  const ACTION_COLORS = ["#56b4e9", "#ffb000", "#cc79a7", "#3ccf8e", "#ff5c5c", "#f0e442", "#0072b2", "#d55e00"];
  const EVENT_COLORS = { seen: "#3ccf8e", lost: "#ff5c5c", reached: "#ffb000", blocked: "#cc79a7",
    away: "#f0e442", reward: "#ffb000", end: "#8b93a1", high: "#3ccf8e", low: "#ff5c5c", other: "#8b93a1" };
  const rgb = (t, i) => `rgb(${t[i * 3]},${t[i * 3 + 1]},${t[i * 3 + 2]})`;

  // ------------------------------------------------------------------ state
  const S = {
    ep: 0, t: 0, method: M.methods.length ? M.methods[0].name : null, target: "taken",
    opacity: 0.7, scale: "episode", overlay: "attr", isolate: -1, colorBy: "value",
    playing: false, speed: 10, renderMs: 0,
  };
  const cache = {}; // episode -> {rec, frames: Image, maps: {key: Uint8ClampedArray}, nmf: [...]}
  const images = {}; // src -> Image
  const FH = M.frame.h, FW = M.frame.w, COLS = M.cols;
  const MH = (M.map || M.frame).h, MW = (M.map || M.frame).w; // maps may be stored smaller

  function fail(msg) { const e = $("error"); e.textContent = msg; e.hidden = false; console.warn(msg); }

  function image(src) {
    if (!images[src]) {
      const img = new Image();
      img.decoding = "async";
      img.ready = new Promise((ok, bad) => { img.onload = ok; img.onerror = () => bad(new Error("cannot load " + src)); });
      img.src = src;
      images[src] = img;
    }
    return images[src];
  }

  // Map sheets come as data: URLs, which (unlike file:// images) do not taint a canvas, so
  // their pixels can be read once and coloured per frame in JS.
  async function pixels(url) {
    const img = new Image();
    img.src = url;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width; c.height = img.height;
    const g = c.getContext("2d", { willReadFrequently: true });
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data, out = new Uint8ClampedArray(c.width * c.height);
    for (let i = 0, j = 0; j < out.length; i += 4, j++) out[j] = d[i];
    return { data: out, width: c.width };
  }

  function loadScript(src) {
    return new Promise((ok, bad) => {
      const s = document.createElement("script");
      s.src = src; s.dataset.lazy = "1";
      s.onload = ok; s.onerror = () => bad(new Error("cannot load " + src));
      document.body.appendChild(s);
    });
  }

  // A long episode comes in chunks of E.chunk steps (data/ep{i}/chunk_{c}.js: its map sheets;
  // frames_{c}.png, stack_{c}.png): a part is loaded when the cursor reaches it, its neighbour
  // ahead is fetched meanwhile, and only PARTS_KEPT parts stay decoded, so a 10,000-step
  // episode opens and jumps as fast as a short one.
  const PARTS_KEPT = 6;
  function chunkFile(E, name, c) { return E.dir + "/" + name + "_" + c + (name === "chunk" ? ".js" : ".png"); }

  function frameAt(ep, t) {
    const E = M.episodes[ep];
    if (!E.chunk) return { img: image(E.frames), t };
    const c = Math.floor(t / E.chunk);
    return { img: image(chunkFile(E, "frames", c)), t: t - c * E.chunk };
  }

  function loadPart(e, i, c) {
    if (e.parts[c]) return e.parts[c].ready;
    const E = M.episodes[i], part = { c, used: performance.now() };
    e.parts[c] = part;
    part.ready = (async () => {
      const key = i + ":" + c;
      if (!(R.parts && R.parts[key])) await loadScript(chunkFile(E, "chunk", c));
      const data = R.parts[key];
      part.frames = image(chunkFile(E, "frames", c));
      const keys = Object.keys(data.maps || {});
      const decoded = await Promise.all(keys.map((k) => pixels(data.maps[k])));
      part.maps = {}; keys.forEach((k, j) => (part.maps[k] = decoded[j]));
      part.nmf = data.nmf ? await Promise.all(data.nmf.map(pixels)) : null;
      part.stack = e.rec.stack && e.rec.stack.k ? image(chunkFile(E, "stack", c)) : null;
      const sk = Object.keys(data.stack || {});
      const sdec = await Promise.all(sk.map((k) => pixels(data.stack[k])));
      part.stackMaps = {}; sk.forEach((k, j) => (part.stackMaps[k] = sdec[j]));
      delete R.parts[key]; // decoded: the script's data URLs can go
      await part.frames.ready;
      if (part.stack) await part.stack.ready;
      part.loaded = true;
      const old = Object.values(e.parts).filter((p) => p.loaded).sort((a, b) => a.used - b.used);
      while (old.length > PARTS_KEPT) delete e.parts[old.shift().c];
      return part;
    })();
    part.ready.catch((err) => { delete e.parts[c]; fail(String(err.message || err)); });
    return part.ready;
  }

  // The sheets holding step t: the episode's own, or its chunk's once loaded (null: loading;
  // the cursor is drawn again when it arrives).
  function at(e, t) {
    if (!e.parts) return { p: e, u: t };
    const c = Math.floor(t / e.chunk), part = e.parts[c];
    const n = Math.ceil(e.rec.T / e.chunk);
    if (c + 1 < n && !e.parts[c + 1]) loadPart(e, S.ep, c + 1); // the part ahead, for playing
    if (part && part.loaded) { part.used = performance.now(); return { p: part, u: t - c * e.chunk }; }
    const ep = S.ep;
    loadPart(e, ep, c).then(() => { if (S.ep === ep && Math.floor(S.t / e.chunk) === c) render(); });
    return null;
  }

  async function loadEpisode(i) {
    if (cache[i]) return cache[i].ready;
    const entry = { };
    cache[i] = entry;
    entry.ready = (async () => {
      if (!R.episodes[i]) await loadScript(M.episodes[i].file);
      const rec = R.episodes[i];
      entry.rec = rec;
      if (M.episodes[i].chunk) {
        entry.chunk = M.episodes[i].chunk; entry.parts = {};
        entry.maps = {}; (rec.map_keys || []).forEach((k) => (entry.maps[k] = true));
        entry.stackMaps = {}; ((rec.stack && rec.stack.targets) || []).forEach((k) => (entry.stackMaps[k] = true));
        await loadPart(entry, i, 0);
        return entry;
      }
      entry.frames = image(M.episodes[i].frames);
      const keys = Object.keys(rec.maps || {});
      const decoded = await Promise.all(keys.map((k) => pixels(rec.maps[k])));
      entry.maps = {}; keys.forEach((k, j) => (entry.maps[k] = decoded[j]));
      entry.nmf = rec.nmf ? await Promise.all(rec.nmf.map(pixels)) : null;
      entry.stack = rec.stack ? image(rec.stack.file) : null;
      const sk = Object.keys((rec.stack && rec.stack.maps) || {});
      const sdec = await Promise.all(sk.map((k) => pixels(rec.stack.maps[k])));
      entry.stackMaps = {}; sk.forEach((k, j) => (entry.stackMaps[k] = sdec[j]));
      await entry.frames.ready;
      if (entry.stack) await entry.stack.ready;
      return entry;
    })();
    return entry.ready;
  }

  // ------------------------------------------------------------------ observation + overlay
  const obs = $("obs"), og = obs.getContext("2d");
  const tile = document.createElement("canvas"); tile.width = MW; tile.height = MH;
  const tg = tile.getContext("2d");
  const tileImg = tg.createImageData(MW, MH);
  const SCALE = Math.max(1, Math.floor(320 / FW));
  obs.width = FW * SCALE; obs.height = FH * SCALE;
  obs.style.width = obs.width + "px"; obs.style.height = obs.height + "px";

  function tileValues(sheet, t, cols) {
    cols = cols || COLS;
    const r = Math.floor(t / cols), c = t % cols, out = new Uint8ClampedArray(MW * MH);
    for (let y = 0; y < MH; y++) {
      const row = (r * MH + y) * sheet.width + c * MW;
      out.set(sheet.data.subarray(row, row + MW), y * MW);
    }
    return out;
  }

  function methodInfo(name) { return M.methods.find((m) => m.name === name) || { signed: false }; }

  function drawAttribution(e, p, t) {
    const key = S.method + "|" + S.target, sheet = p.maps[key];
    if (!sheet) return false;
    colorize(tileValues(sheet, t), !!(e.rec.signed || {})[key], tileImg.data);
    return true;
  }

  // Map values (uint8; signed: 128 is 0) -> RGBA pixels, on the episode or the frame's scale.
  function colorize(v, signed, px) {
    let top = 255;
    if (S.scale === "frame") {
      top = 1;
      for (let i = 0; i < v.length; i++) top = Math.max(top, signed ? Math.abs(v[i] - 128) * 2 : v[i]);
    }
    const table = signed ? LUT.attrSigned : LUT.attr;
    for (let i = 0; i < v.length; i++) {
      let m, idx;
      if (signed) { const s = ((v[i] - 128) * 2) / top; m = Math.min(1, Math.abs(s)); idx = Math.round(Math.max(-1, Math.min(1, s)) * 127.5 + 127.5); }
      else { m = Math.min(1, v[i] / top); idx = Math.round(m * 255); }
      px[i * 4] = table[idx * 3]; px[i * 4 + 1] = table[idx * 3 + 1]; px[i * 4 + 2] = table[idx * 3 + 2];
      px[i * 4 + 3] = Math.round(Math.min(1, m * 1.6) * 255);
    }
  }

  function drawNMF(e, t) {
    if (!e.nmf) return false;
    const feats = e.nmf.map((s) => tileValues(s, t)), colors = M.nmf.features.map((f) => f.color), px = tileImg.data;
    for (let i = 0; i < MW * MH; i++) {
      let r = 0, g = 0, b = 0, sum = 0, top = 0;
      for (let f = 0; f < feats.length; f++) {
        if (S.isolate >= 0 && f !== S.isolate) continue;
        const w = feats[f][i];
        r += colors[f][0] * w; g += colors[f][1] * w; b += colors[f][2] * w; sum += w; top = Math.max(top, w);
      }
      px[i * 4] = sum ? r / sum : 0; px[i * 4 + 1] = sum ? g / sum : 0; px[i * 4 + 2] = sum ? b / sum : 0;
      px[i * 4 + 3] = Math.min(255, top * 1.6);
    }
    return true;
  }

  function drawObservation(e, t) {
    const a = at(e, t);
    if (!a) { obs.dataset.t = ""; return; } // its chunk is on its way: drawn when it arrives
    const p = a.p, u = a.u;
    og.imageSmoothingEnabled = false;
    og.globalAlpha = 1;
    const r = Math.floor(u / COLS), c = u % COLS;
    og.drawImage(p.frames, c * FW, r * FH, FW, FH, 0, 0, obs.width, obs.height);
    let drawn = false;
    if (S.overlay === "attr") drawn = drawAttribution(e, p, u);
    else if (S.overlay === "nmf") drawn = drawNMF(p, u);
    if (drawn) {
      og.fillStyle = `rgba(0, 0, 0, ${0.4 * S.opacity})`;  // dim the frame: the map reads on any colour
      og.fillRect(0, 0, obs.width, obs.height);
      tg.putImageData(tileImg, 0, 0);
      og.imageSmoothingEnabled = true;
      og.globalAlpha = S.opacity;
      og.drawImage(tile, 0, 0, obs.width, obs.height);
      og.globalAlpha = 1;
    }
    obs.dataset.t = t; obs.dataset.ep = S.ep;
    obs.dataset.overlay = drawn ? (S.overlay === "attr" ? S.method + "|" + S.target : "nmf:" + S.isolate) : "none";
  }

  function drawColorbar() {
    const c = $("colorbar"), g = c.getContext("2d"), signed = S.overlay === "attr" && !!methodInfo(S.method).signed;
    const table = signed ? LUT.attrSigned : LUT.attr;
    for (let x = 0; x < c.width; x++) { g.fillStyle = rgb(table, Math.round((x / (c.width - 1)) * 255)); g.fillRect(x, 0, 1, c.height); }
    c.title = signed ? "negative \u2190 0 \u2192 positive" : "0 \u2192 high (" + S.scale + " scale)";
  }

  // ------------------------------------------------------------------ stack + memory
  // A stacked policy's frames, oldest first, each with its own map (one input-space method,
  // the page's target when it has per-frame maps, else the taken action) and attribution share.
  function stackTarget(p) {
    const maps = p.stackMaps || {};
    return maps[S.target] ? S.target : maps.taken ? "taken" : Object.keys(maps)[0] || null;
  }

  function drawStack(e, t) {
    const card = $("stack-card"), st = e.rec.stack, mem = e.rec.memory;
    card.hidden = !st && !mem; // a recurrent policy: memory reliance without frames
    $("memory-info").textContent = mem ? `memory reliance: KL ${mem.kl[t].toFixed(3)}` + (mem.share ? ` \u00b7 memory share ${(mem.share[t] * 100).toFixed(0)}%` : "") : "";
    if (!st) { $("stack").innerHTML = ""; $("stack").dataset.k = ""; return; }
    const k = st.k, cols = st.cols, box = $("stack");
    if (box.dataset.k !== String(k)) {
      box.innerHTML = ""; box.dataset.k = k;
      for (let j = 0; j < k; j++) {
        const cell = document.createElement("figure"); cell.className = "frame";
        const c = document.createElement("canvas"); c.width = FW * Math.min(SCALE, 2); c.height = FH * Math.min(SCALE, 2);
        c.title = j === k - 1 ? "newest frame (t)" : `frame t-${k - 1 - j}`;
        const cap = document.createElement("figcaption");
        cell.appendChild(c); cell.appendChild(cap); box.appendChild(cell);
      }
    }
    const a = at(e, t);
    if (!a) { box.dataset.t = ""; return; }
    const p = a.p, key = stackTarget(p), sheet = key ? p.stackMaps[key] : null;
    const shares = key && st.shares ? st.shares[key][t] : null;
    for (let j = 0; j < k; j++) {
      const idx = a.u * k + j, cell = box.children[j], c = cell.firstChild, g = c.getContext("2d");
      g.imageSmoothingEnabled = false; g.globalAlpha = 1;
      g.drawImage(p.stack, (idx % cols) * FW, Math.floor(idx / cols) * FH, FW, FH, 0, 0, c.width, c.height);
      if (sheet && S.overlay !== "none") {
        colorize(tileValues(sheet, idx, cols), !!st.signed, tileImg.data);
        tg.putImageData(tileImg, 0, 0);
        g.imageSmoothingEnabled = true; g.globalAlpha = S.opacity;
        g.drawImage(tile, 0, 0, c.width, c.height); g.globalAlpha = 1;
      }
      const age = j === k - 1 ? "t" : `t-${k - 1 - j}`;
      cell.lastChild.textContent = shares ? `${age} \u00b7 ${(shares[j] * 100).toFixed(0)}%` : age;
    }
    $("stack-info").textContent = sheet ? `${st.method} \u00b7 ${key === "value" ? "value V(s)" : "taken action"} \u00b7 share of attribution per frame` : "";
    box.dataset.t = t; box.dataset.target = key || "";
  }

  // ------------------------------------------------------------------ action probabilities
  function drawProbs(e, t) {
    if (e.rec.action_mean) return drawBox(e, t);
    const box = $("probs"), p = e.rec.probs[t], a = e.rec.actions[t];
    if (box.childElementCount !== p.length) {
      box.innerHTML = "";
      M.actions.forEach((name) => {
        const row = document.createElement("div");
        row.className = "bar";
        row.innerHTML = `<span class="name">${name}</span><span class="track"><span class="fill"></span></span><span class="p"></span>`;
        box.appendChild(row);
      });
    }
    p.forEach((v, k) => {
      const row = box.children[k];
      row.classList.toggle("taken", k === a);
      row.querySelector(".fill").style.width = (v * 100).toFixed(1) + "%";
      row.querySelector(".p").textContent = v.toFixed(2);
    });
    box.dataset.t = t;
    const r = e.rec, parts = [`<b>t ${t}</b> / ${r.T - 1}`];
    if (r.values) parts.push(`V <b>${r.values[t].toFixed(3)}</b>`);
    parts.push(`r <b>${r.rewards[t].toFixed(2)}</b>`);
    if (r.advantages) parts.push(`A <b>${r.advantages[t].toFixed(3)}</b>`);
    parts.push(`H <b>${r.entropy[t].toFixed(3)}</b>`);
    const evs = r.events.filter((ev) => ev.t === t).map((ev) => `<span class="ev">${ev.label}</span>`);
    $("step-info").innerHTML = parts.join(" &middot; ") + (evs.length ? "<br>" + evs.join(" &middot; ") : "");
    $("step-label").textContent = `t = ${t}`;
    $("action-label").textContent = `a = ${M.actions[a] || a}`;
  }

  // A Box policy: per dimension, |mean| on one scale for the episode, mean +/- std as text.
  function drawBox(e, t) {
    const box = $("probs"), r = e.rec, m = r.action_mean[t];
    const s = r.action_std ? r.action_std[t] : m.map(() => 0);
    const top = Math.max(1, ...r.action_mean.map((row, i) =>
      Math.max(...row.map((v, k) => Math.abs(v) + (r.action_std ? r.action_std[i][k] : 0)))));
    if (box.childElementCount !== m.length) {
      box.innerHTML = "";
      m.forEach((_, k) => {
        const row = document.createElement("div");
        row.className = "bar";
        row.innerHTML = `<span class="name">${M.actions[k] || "a" + k}</span><span class="track"><span class="fill"></span></span><span class="p"></span>`;
        box.appendChild(row);
      });
    }
    m.forEach((v, k) => {
      const row = box.children[k];
      row.querySelector(".fill").style.width = ((Math.abs(v) / top) * 100).toFixed(1) + "%";
      row.querySelector(".p").textContent = `${v >= 0 ? "+" : ""}${v.toFixed(2)} \u00b1 ${s[k].toFixed(2)}`;
    });
    box.dataset.t = t;
    const parts = [`<b>t ${t}</b> / ${r.T - 1}`];
    if (r.values) parts.push(`V <b>${r.values[t].toFixed(3)}</b>`);
    parts.push(`r <b>${r.rewards[t].toFixed(2)}</b>`);
    if (r.advantages) parts.push(`A <b>${r.advantages[t].toFixed(3)}</b>`);
    parts.push(`H <b>${r.entropy[t].toFixed(3)}</b>`);
    $("step-info").innerHTML = parts.join(" &middot; ");
    $("step-label").textContent = `t = ${t}`;
    $("action-label").textContent = `a = [${r.actions[t].map((v) => v.toFixed(2)).join(", ")}]`;
  }

  // ------------------------------------------------------------------ charts
  const charts = [];
  function chartSpecs(rec) {
    const specs = [];
    if (rec.values) specs.push({ id: "value", label: "value V(s) \u00b7 GAE return", series: [rec.values, rec.returns], colors: ["#56b4e9", "#8b93a1"], kind: "line" });
    specs.push({ id: "reward", label: "reward", series: [rec.rewards], colors: ["#ffb000"], kind: "bar" });
    if (rec.advantages) specs.push({ id: "advantage", label: `advantage (GAE \u03b3=${M.gamma}, \u03bb=${M.lam})`, series: [rec.advantages], colors: ["#3ccf8e"], neg: "#ff5c5c", kind: "bar" });
    specs.push({ id: "entropy", label: "entropy H(\u03c0)", series: [rec.entropy], colors: ["#cc79a7"], kind: "line" });
    if (rec.memory) {
      specs.push({ id: "memory", label: "memory reliance: KL(\u03c0 \u2016 \u03c0 without memory)", series: [rec.memory.kl], colors: ["#f0e442"], kind: "line" });
      if (rec.memory.share) specs.push({ id: "memory-share", label: "memory share of attribution (grad \u00d7 input)", series: [rec.memory.share], colors: ["#e69f00"], kind: "line" });
    }
    return specs;
  }

  function buildCharts(e) {
    const box = $("charts"), specs = chartSpecs(e.rec);
    box.innerHTML = ""; charts.length = 0;
    const width = Math.max(300, box.clientWidth || 500), dpr = window.devicePixelRatio || 1;
    specs.forEach((spec) => {
      const label = document.createElement("div");
      label.className = "chart-label"; label.innerHTML = `<span>${spec.label}</span><span></span>`;
      const c = document.createElement("canvas");
      c.className = "chart"; c.id = "chart-" + spec.id;
      c.width = Math.round(width * dpr); c.height = Math.round(92 * dpr);
      box.appendChild(label); box.appendChild(c);
      const bg = document.createElement("canvas"); bg.width = c.width; bg.height = c.height;
      const ch = { spec, canvas: c, bg, label: label.lastChild, T: e.rec.T, dpr };
      paintChart(ch, e.rec);
      c.addEventListener("mousedown", (ev) => chartJump(ch, ev));
      c.addEventListener("mousemove", (ev) => { if (ev.buttons & 1) chartJump(ch, ev); });
      charts.push(ch);
    });
  }

  function chartX(ch, t) { const pad = 6 * ch.dpr; return pad + (t / Math.max(1, ch.T - 1)) * (ch.canvas.width - 2 * pad); }

  function paintChart(ch, rec) {
    const g = ch.bg.getContext("2d"), W = ch.bg.width, H = ch.bg.height, s = ch.spec, pad = 6 * ch.dpr;
    let lo = Infinity, hi = -Infinity;
    s.series.forEach((ser) => ser && ser.forEach((v) => { lo = Math.min(lo, v); hi = Math.max(hi, v); }));
    if (s.kind === "bar") { lo = Math.min(lo, 0); hi = Math.max(hi, 0); }
    if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
    const y = (v) => H - pad - ((v - lo) / (hi - lo)) * (H - 2 * pad);
    ch.y = y;
    g.fillStyle = "#171a20"; g.fillRect(0, 0, W, H);
    g.strokeStyle = "#2c313b"; g.lineWidth = 1; g.beginPath(); g.moveTo(0, y(0)); g.lineTo(W, y(0)); g.stroke();
    rec.events.forEach((ev) => { // event ticks along the bottom
      g.fillStyle = EVENT_COLORS[ev.kind] || EVENT_COLORS.other;
      g.fillRect(chartX(ch, ev.t) - ch.dpr, H - 3 * ch.dpr, 2 * ch.dpr, 3 * ch.dpr);
    });
    s.series.forEach((ser, j) => {
      if (!ser) return;
      if (s.kind === "bar") {
        const bw = Math.max(1, (W - 2 * pad) / ser.length - 0.5);
        ser.forEach((v, t) => {
          g.fillStyle = v < 0 && s.neg ? s.neg : s.colors[j];
          const y0 = y(0), y1 = y(v);
          g.fillRect(chartX(ch, t) - bw / 2, Math.min(y0, y1), bw, Math.max(1, Math.abs(y1 - y0)));
        });
      } else {
        g.strokeStyle = s.colors[j]; g.lineWidth = (j ? 1 : 1.6) * ch.dpr; g.beginPath();
        ser.forEach((v, t) => (t ? g.lineTo(chartX(ch, t), y(v)) : g.moveTo(chartX(ch, t), y(v))));
        g.stroke();
      }
    });
    g.fillStyle = "#8b93a1"; g.font = `${10 * ch.dpr}px system-ui`;
    g.fillText(hi.toFixed(2), 2, 10 * ch.dpr); g.fillText(lo.toFixed(2), 2, H - 5 * ch.dpr);
  }

  function drawCharts(e, t) {
    charts.forEach((ch) => {
      const g = ch.canvas.getContext("2d"), x = chartX(ch, t), v = ch.spec.series[0][t];
      g.drawImage(ch.bg, 0, 0);
      g.strokeStyle = "#ffffff"; g.lineWidth = ch.dpr; g.beginPath(); g.moveTo(x, 0); g.lineTo(x, ch.canvas.height); g.stroke();
      g.fillStyle = "#ffb000"; g.beginPath(); g.arc(x, ch.y(v), 3 * ch.dpr, 0, 2 * Math.PI); g.fill();
      ch.canvas.dataset.t = t;
      ch.label.textContent = v.toFixed(3);
    });
  }

  function chartJump(ch, ev) {
    const rect = ch.canvas.getBoundingClientRect(), pad = 6;
    const f = (ev.clientX - rect.left - pad) / Math.max(1, rect.width - 2 * pad);
    setCursor(Math.round(f * (ch.T - 1)));
  }

  // ------------------------------------------------------------------ bookmarks
  // Bookmarks: the steps of extreme advantage (apart from each other) and the env's events,
  // with a run of the same event on consecutive steps shown once.
  const BOOKMARK_KINDS = ["seen", "lost", "reached", "blocked", "reward", "end", "other"];
  function extremes(values, count, sign, gap) {
    const order = values.map((v, t) => [v, t]).sort((a, b) => sign * (b[0] - a[0])), out = [];
    for (const [v, t] of order) {
      if (out.length >= count) break;
      if (out.every((o) => Math.abs(o[1] - t) >= gap)) out.push([v, t]);
    }
    return out;
  }
  function buildBookmarks(e) {
    const rec = e.rec, items = [];
    if (rec.advantages) {
      const gap = Math.max(2, Math.round(rec.T / 20));
      extremes(rec.advantages, 3, 1, gap).forEach(([v, t]) => items.push({ t, kind: "high", label: `A max ${v.toFixed(2)}` }));
      extremes(rec.advantages, 3, -1, gap).forEach(([v, t]) => items.push({ t, kind: "low", label: `A min ${v.toFixed(2)}` }));
    }
    const last = {};
    rec.events.forEach((ev) => {
      if (!BOOKMARK_KINDS.includes(ev.kind)) return;
      const run = last[ev.kind];
      if (run && run.end === ev.t - 1) { run.end = ev.t; run.n += 1; run.label = `${run.base} \u00d7${run.n}`; return; }
      const item = { t: ev.t, kind: ev.kind, label: ev.label, base: ev.label, end: ev.t, n: 1 };
      last[ev.kind] = item; items.push(item);
    });
    items.sort((a, b) => a.t - b.t);
    const ul = $("bookmarks");
    ul.innerHTML = "";
    items.forEach((it) => {
      const li = document.createElement("li");
      li.dataset.t = it.t; li.dataset.kind = it.kind;
      li.innerHTML = `<span class="k" style="background:${EVENT_COLORS[it.kind] || EVENT_COLORS.other}"></span>t ${it.t} \u00b7 ${it.label}`;
      li.addEventListener("click", () => setCursor(it.t));
      ul.appendChild(li);
    });
  }

  function drawBookmarks(t) {
    for (const li of $("bookmarks").children) li.classList.toggle("current", +li.dataset.t === t);
  }

  // ------------------------------------------------------------------ state map
  const SM = M.statemap, tsne = $("tsne"), sg = tsne.getContext("2d");
  const tsneBg = document.createElement("canvas");
  let tsneValues = null;
  const TP = 10; // padding in px
  function tsneXY(i) { return [TP + SM.xy[i][0] * (tsne.width - 2 * TP), tsne.height - TP - SM.xy[i][1] * (tsne.height - 2 * TP)]; }

  function pointColor(i) {
    const ep = SM.ep[i], t = SM.t[i], info = M.episodes[ep];
    if (S.colorBy === "action") return SM.action ? ACTION_COLORS[SM.action[i] % ACTION_COLORS.length] : "#888";
    if (S.colorBy === "time") return rgb(LUT.viridis, Math.round((t / Math.max(1, info.T - 1)) * 255));
    if (S.colorBy === "success") return info.success ? "#3ccf8e" : "#ff5c5c";
    const v = tsneValues ? tsneValues[i] : 0.5;
    return rgb(LUT.viridis, Math.round(v * 255));
  }

  function paintTsne() {
    if (!SM) return;
    tsneBg.width = tsne.width; tsneBg.height = tsne.height;
    const g = tsneBg.getContext("2d");
    g.fillStyle = "#101217"; g.fillRect(0, 0, tsne.width, tsne.height);
    if (SM.value) {
      let lo = Infinity, hi = -Infinity;
      SM.value.forEach((v) => { lo = Math.min(lo, v); hi = Math.max(hi, v); });
      tsneValues = SM.value.map((v) => (v - lo) / Math.max(1e-9, hi - lo));
    }
    g.globalAlpha = 0.75;
    for (let i = 0; i < SM.xy.length; i++) {
      const [x, y] = tsneXY(i);
      g.fillStyle = pointColor(i); g.beginPath(); g.arc(x, y, 2.3, 0, 2 * Math.PI); g.fill();
    }
    g.globalAlpha = 1;
    const leg = $("tsne-legend");
    if (S.colorBy === "action") leg.innerHTML = M.actions.map((a, k) => `<span><i style="background:${ACTION_COLORS[k % ACTION_COLORS.length]}"></i>${a}</span>`).join("");
    else if (S.colorBy === "success") leg.innerHTML = `<span><i style="background:#3ccf8e"></i>success</span><span><i style="background:#ff5c5c"></i>failure</span>`;
    else leg.innerHTML = `<span><i style="background:${rgb(LUT.viridis, 0)}"></i>low ${S.colorBy}</span><span><i style="background:${rgb(LUT.viridis, 255)}"></i>high</span>`;
  }

  function pointIndex(ep, t) { return (SM.offset[ep] || 0) + t; }

  function drawTsne(t) {
    if (!SM) return;
    sg.drawImage(tsneBg, 0, 0);
    const start = pointIndex(S.ep, 0), cur = pointIndex(S.ep, t), trail = 25;
    sg.strokeStyle = "#ffffffaa"; sg.lineWidth = 1.2; sg.beginPath();
    for (let i = Math.max(start, cur - trail); i <= cur; i++) {
      const [x, y] = tsneXY(i);
      i === Math.max(start, cur - trail) ? sg.moveTo(x, y) : sg.lineTo(x, y);
    }
    sg.stroke();
    const [x, y] = tsneXY(cur);
    sg.fillStyle = "#ffb000"; sg.strokeStyle = "#000"; sg.lineWidth = 2;
    sg.beginPath(); sg.arc(x, y, 6, 0, 2 * Math.PI); sg.fill(); sg.stroke();
    tsne.dataset.current = cur; tsne.dataset.ep = S.ep; tsne.dataset.t = t;
  }

  function nearestPoint(ev) {
    const rect = tsne.getBoundingClientRect();
    const mx = ((ev.clientX - rect.left) / rect.width) * tsne.width, my = ((ev.clientY - rect.top) / rect.height) * tsne.height;
    let best = -1, bd = 64; // within 8 px
    for (let i = 0; i < SM.xy.length; i++) {
      const [x, y] = tsneXY(i), d = (x - mx) ** 2 + (y - my) ** 2;
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  }

  function setupTsne() {
    if (!SM) { $("tsne-info").textContent = "(not computed)"; return; }
    SM.offset = []; let acc = 0;
    M.episodes.forEach((e, i) => { SM.offset[i] = acc; acc += e.T; });
    $("tsne-info").textContent = `${SM.xy.length} states \u00b7 ${SM.layer || ""}`;
    const tip = $("tsne-tip"), thumb = $("tsne-thumb").getContext("2d");
    tsne.addEventListener("mousemove", (ev) => {
      const i = nearestPoint(ev);
      if (i < 0) { tip.hidden = true; return; }
      const ep = SM.ep[i], t = SM.t[i], f = frameAt(ep, t), img = f.img;
      const show = () => {
        thumb.imageSmoothingEnabled = false;
        thumb.drawImage(img, (f.t % COLS) * FW, Math.floor(f.t / COLS) * FH, FW, FH, 0, 0, 160, 120);
      };
      img.complete ? show() : img.ready.then(show);
      const v = SM.value ? ` \u00b7 V ${SM.value[i].toFixed(2)}` : "", a = SM.action ? ` \u00b7 ${M.actions[SM.action[i]]}` : "";
      $("tsne-tip-text").textContent = `episode ${ep} \u00b7 t ${t}${v}${a}`;
      const rect = tsne.getBoundingClientRect(), px = ev.clientX - rect.left, py = ev.clientY - rect.top;
      tip.style.left = Math.min(px + 12, rect.width - 170) + "px"; tip.style.top = Math.min(py + 12, rect.height - 150) + "px";
      tip.hidden = false; tip.dataset.index = i;
    });
    tsne.addEventListener("mouseleave", () => ($("tsne-tip").hidden = true));
    tsne.addEventListener("click", (ev) => {
      const i = nearestPoint(ev);
      if (i >= 0) jump(SM.ep[i], SM.t[i]);
    });
  }

  // ------------------------------------------------------------------ NMF legend
  function visImage() { return M.vis ? image(M.vis.file) : null; }
  function drawVis(canvas, index) {
    const img = visImage(); if (!img || index == null) return;
    const draw = () => {
      const g = canvas.getContext("2d"); canvas.width = FW; canvas.height = FH;
      g.drawImage(img, (index % M.vis.cols) * FW, Math.floor(index / M.vis.cols) * FH, FW, FH, 0, 0, FW, FH);
    };
    img.complete && img.naturalWidth ? draw() : img.ready.then(draw);
  }

  function setupNMF() {
    const N = M.nmf, box = $("nmf-legend");
    if (!N) { $("nmf-card").hidden = true; $("overlay-kind").querySelector("[value=nmf]").disabled = true; return; }
    $("nmf-info").textContent = `${N.layer} \u2192 ${N.target} \u00b7 error ${(N.error * 100).toFixed(1)}%`;
    N.features.forEach((f, k) => {
      const d = document.createElement("div");
      d.className = "feature"; d.dataset.feature = k;
      d.title = "click: isolate this feature (again: show all); double-click: its feature visualisation";
      const c = document.createElement("canvas");
      d.innerHTML = `<span class="sw" style="background:rgb(${f.color.join(",")})"></span>`;
      d.appendChild(c);
      const txt = document.createElement("span"); txt.className = "txt";
      txt.innerHTML = `feature ${k + 1}<br>${(f.share * 100).toFixed(0)}% \u00b7 ch ${f.top_channels.join(",")}`;
      d.appendChild(txt);
      if (N.vis && N.vis.length > k) drawVis(c, N.vis[k]);
      d.addEventListener("click", () => {
        S.isolate = S.isolate === k ? -1 : k; S.overlay = "nmf"; $("overlay-kind").value = "nmf";
        updateLegend(); render();
      });
      d.addEventListener("dblclick", () => showModal(N.vis ? N.vis[k] : null, `NMF feature ${k + 1} of ${N.layer} (direction visualised)`));
      box.appendChild(d);
    });
  }
  function updateLegend() {
    for (const d of $("nmf-legend").children) {
      const k = +d.dataset.feature;
      d.classList.toggle("isolated", S.isolate === k);
      d.classList.toggle("dimmed", S.isolate >= 0 && S.isolate !== k);
    }
  }

  // ------------------------------------------------------------------ network tab
  function thumb(canvas, ep, t, box) {
    const f = frameAt(ep, t), img = f.img, u = f.t;
    const draw = () => {
      const g = canvas.getContext("2d"); canvas.width = FW; canvas.height = FH;
      g.drawImage(img, (u % COLS) * FW, Math.floor(u / COLS) * FH, FW, FH, 0, 0, FW, FH);
      if (box) { g.strokeStyle = "#ffb000"; g.lineWidth = 1; g.strokeRect(box[1] + 0.5, box[0] + 0.5, box[3] - box[1] - 1, box[2] - box[0] - 1); }
    };
    img.complete && img.naturalWidth ? draw() : img.ready.then(draw);
  }

  function setupNetwork() {
    const N = M.network, box = $("network");
    if (!N) { $("network-note").textContent = "The network tab was not computed for this report (explore(..., network=True))."; return; }
    $("network-note").textContent = "A few units per layer: their feature visualisation (activation maximisation), " +
      (N.dissected ? "IoU of the unit's top-activation region with the goal box (network dissection), " : "") +
      "the effect of switching the unit off (mean KL of \u03c0, share of frames whose greedy action flips), and the states that activate it most (click one to jump there).";
    N.layers.forEach((layer) => {
      const sec = document.createElement("div"); sec.className = "layer";
      sec.innerHTML = `<h2>${layer.name}</h2>`;
      const units = document.createElement("div"); units.className = "units";
      layer.units.forEach((u) => {
        const card = document.createElement("div"); card.className = "unit"; card.dataset.unit = u.unit; card.dataset.layer = layer.name;
        const vis = document.createElement("canvas"); vis.className = "vis"; drawVis(vis, u.vis);
        vis.addEventListener("click", () => showModal(u.vis, `${layer.name} unit ${u.unit}: feature visualisation`));
        card.appendChild(vis);
        const stats = document.createElement("div"); stats.className = "stats";
        stats.innerHTML = `unit <b>${u.unit}</b>` + (u.iou != null ? ` \u00b7 IoU <b>${u.iou.toFixed(3)}</b>` : "") +
          ` \u00b7 ablation KL <b>${u.kl.toFixed(4)}</b> \u00b7 flips <b>${(u.flip * 100).toFixed(1)}%</b>`;
        card.appendChild(stats);
        const tops = document.createElement("div"); tops.className = "tops";
        u.top.forEach((s) => {
          const c = document.createElement("canvas"); c.title = `episode ${s.ep}, t ${s.t} (peak ${s.score.toFixed(2)})`;
          c.dataset.ep = s.ep; c.dataset.t = s.t;
          thumb(c, s.ep, s.t, s.box);
          c.addEventListener("click", () => { showTab("episode"); jump(s.ep, s.t); });
          tops.appendChild(c);
        });
        card.appendChild(tops);
        units.appendChild(card);
      });
      sec.appendChild(units); box.appendChild(sec);
    });
    $("modal").addEventListener("click", () => ($("modal").hidden = true));
  }

  function showModal(index, text) {
    if (index == null) return;
    drawVis($("modal-canvas"), index);
    $("modal-text").textContent = text; $("modal").hidden = false;
  }

  function showTab(name) {
    $("tab-episode").hidden = name !== "episode"; $("tab-network").hidden = name !== "network";
    document.querySelectorAll("button.tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
    if (name === "episode" && cache[S.ep] && cache[S.ep].rec && !charts.length) buildCharts(cache[S.ep]);
  }

  // ------------------------------------------------------------------ cursor
  function render() {
    const e = cache[S.ep];
    if (!e || !e.rec) return;
    const t0 = performance.now(), t = S.t;
    drawObservation(e, t); drawStack(e, t); drawProbs(e, t); drawCharts(e, t); drawBookmarks(t); drawTsne(t);
    const scrub = $("scrub"); scrub.value = t; scrub.dataset.t = t;
    S.renderMs = performance.now() - t0;
    document.body.dataset.renderMs = S.renderMs.toFixed(3);
    document.body.dataset.ep = S.ep; document.body.dataset.t = t;
  }

  function setCursor(t) {
    const e = cache[S.ep];
    if (!e || !e.rec) return;
    S.t = Math.max(0, Math.min(e.rec.T - 1, t | 0));
    render();
  }

  async function setEpisode(i, t) {
    i = Math.max(0, Math.min(M.episodes.length - 1, i | 0));
    S.ep = i; $("episode").value = i;
    document.body.dataset.loading = "1";
    let e;
    try { e = await loadEpisode(i); } catch (err) { fail(String(err.message || err)); return; }
    if (S.ep !== i) return; // another episode was picked meanwhile
    $("scrub").max = e.rec.T - 1;
    fillTargets(e);
    buildCharts(e); buildBookmarks(e);
    S.t = Math.max(0, Math.min(e.rec.T - 1, t || 0));
    render();
    document.body.dataset.loading = "";
    if (!document.body.dataset.ready) { document.body.dataset.ready = "1"; R.firstPaintMs = performance.now() - T0; R.firstPaintSinceNavMs = performance.now(); }
  }

  function jump(ep, t) { if (ep === S.ep) setCursor(t); else setEpisode(ep, t); }

  // ------------------------------------------------------------------ controls
  function fillTargets(e) {
    const sel = $("target"), keep = S.target, opts = [];
    const has = (tg) => e.maps[S.method + "|" + tg];
    if (has("taken")) opts.push(["taken", "taken action"]);
    if (has("value")) opts.push(["value", "value V(s)"]);
    M.actions.forEach((name, k) => { if (has("a" + k)) opts.push(["a" + k, "action: " + name]); });
    sel.innerHTML = opts.map(([v, l]) => `<option value="${v}">${l}</option>`).join("");
    S.target = opts.some((o) => o[0] === keep) ? keep : opts.length ? opts[0][0] : null;
    if (S.target) sel.value = S.target;
    drawColorbar();
  }

  function play() {
    S.playing = !S.playing; $("play").innerHTML = S.playing ? "&#10073;&#10073;" : "&#9654;";
    if (!S.playing) return;
    let last = performance.now(), acc = 0;
    const tick = (now) => {
      if (!S.playing) return;
      acc += ((now - last) / 1000) * S.speed; last = now;
      const e = cache[S.ep];
      if (acc >= 1 && e && e.rec) {
        const n = Math.floor(acc); acc -= n;
        if (S.t >= e.rec.T - 1) { play(); return; }
        setCursor(S.t + n);
      }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  }

  function setupControls() {
    const ep = $("episode");
    ep.innerHTML = M.episodes.map((e, i) => `<option value="${i}">${i}: ${e.T} steps \u00b7 ${e.success ? "success" : "failure"} \u00b7 R ${e.return.toFixed(2)}</option>`).join("");
    ep.addEventListener("change", () => setEpisode(+ep.value));
    const method = $("method");
    method.innerHTML = M.methods.map((m) => `<option value="${m.name}">${m.title || m.name}</option>`).join("");
    method.addEventListener("change", () => { S.method = method.value; if (cache[S.ep] && cache[S.ep].maps) fillTargets(cache[S.ep]); S.overlay = "attr"; $("overlay-kind").value = "attr"; render(); });
    $("target").addEventListener("change", () => { S.target = $("target").value; S.overlay = "attr"; $("overlay-kind").value = "attr"; render(); });
    $("opacity").addEventListener("input", () => { S.opacity = +$("opacity").value; render(); });
    $("scale").addEventListener("change", () => { S.scale = $("scale").value; drawColorbar(); render(); });
    $("overlay-kind").addEventListener("change", () => { S.overlay = $("overlay-kind").value; drawColorbar(); render(); });
    $("color-by").addEventListener("change", () => { S.colorBy = $("color-by").value; paintTsne(); render(); });
    $("scrub").addEventListener("input", () => setCursor(+$("scrub").value));
    $("play").addEventListener("click", play);
    $("speed").addEventListener("change", () => (S.speed = +$("speed").value));
    document.querySelectorAll("button.tab").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
    document.addEventListener("keydown", (ev) => {
      const tag = (ev.target && ev.target.tagName) || "";
      if (tag === "SELECT" || (tag === "INPUT" && ev.target.type !== "range")) return;
      const step = ev.shiftKey ? 10 : 1;
      const keys = {
        ArrowRight: () => setCursor(S.t + step), ArrowLeft: () => setCursor(S.t - step),
        Home: () => setCursor(0), End: () => setCursor(1e9), " ": play,
        "]": () => setEpisode(S.ep + 1), "[": () => setEpisode(S.ep - 1),
      };
      if (keys[ev.key]) { ev.preventDefault(); keys[ev.key](); }
    });
    window.addEventListener("resize", () => { if (cache[S.ep] && cache[S.ep].rec) { buildCharts(cache[S.ep]); render(); } });
  }

  // ------------------------------------------------------------------ start
  if (!M) { fail("data/manifest.js is missing: this page needs the data folder written beside it by rlviz explore"); return; }
  if (SM && !SM.value && M.episodes.length) SM.value = null;
  setupControls(); setupNMF(); setupNetwork(); setupTsne(); paintTsne(); drawColorbar();
  // expose for tests and benchmarks (no other global is read by the page)
  R.explorer = { state: S, setCursor, setEpisode, jump, showTab, loaded: () => Object.keys(cache).map(Number) };
  setEpisode(0, 0);
})();
