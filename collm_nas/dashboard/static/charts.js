/* collm-nas dashboard charts: hand-written SVG (line/step curves with bands, scatter), hover tooltips.
   No libraries; everything the pages draw comes from here. */
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#dc6803", "#15803d", "#9333ea", "#0e7490", "#be123c", "#4d7c0f", "#a16207", "#475467"];
  const M = { top: 12, right: 18, bottom: 40, left: 62 };

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceTicks(lo, hi, count) {
    if (!(isFinite(lo) && isFinite(hi))) return [];
    if (lo === hi) { lo -= 1; hi += 1; }
    const raw = (hi - lo) / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
    return ticks;
  }

  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    return +v.toPrecision(a >= 100 ? 5 : 4) + "";
  }

  function extent(values, pad) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) { if (v !== null && isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; } }
    if (lo === Infinity) return [0, 1];
    if (lo === hi) { const d = Math.abs(lo) * 0.05 || 1; return [lo - d, hi + d]; }
    const d = (hi - lo) * (pad || 0.04);
    return [lo - d, hi + d];
  }

  function frame(container, opts) {
    container.textContent = "";
    const width = Math.max(320, container.clientWidth || 900);
    const height = opts.height || 300;
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img" }, container);
    if (opts.title) el("title", {}, svg).textContent = opts.title;
    const w = width - M.left - M.right, h = height - M.top - M.bottom;
    const [x0, x1] = opts.x, [y0, y1] = opts.y;
    const sx = v => M.left + (x1 === x0 ? w / 2 : (v - x0) / (x1 - x0) * w);
    const sy = v => M.top + h - (y1 === y0 ? h / 2 : (v - y0) / (y1 - y0) * h);
    const axis = el("g", { class: "axis" }, svg);
    for (const t of niceTicks(y0, y1, 5)) {
      el("line", { x1: M.left, x2: M.left + w, y1: sy(t), y2: sy(t), class: "gridline" }, axis);
      el("text", { x: M.left - 6, y: sy(t) + 4, "text-anchor": "end" }, axis).textContent = fmt(t);
    }
    for (const t of niceTicks(x0, x1, Math.max(2, Math.floor(w / 90)))) {
      if (opts.integerX && t !== Math.round(t)) continue;
      el("line", { x1: sx(t), x2: sx(t), y1: M.top + h, y2: M.top + h + 4 }, axis);
      el("text", { x: sx(t), y: M.top + h + 17, "text-anchor": "middle" }, axis).textContent = fmt(t);
    }
    el("path", { d: `M${M.left},${M.top}V${M.top + h}H${M.left + w}`, fill: "none" }, axis);
    el("text", { x: M.left + w / 2, y: height - 5, "text-anchor": "middle" }, axis).textContent = opts.xlabel || "";
    el("text", { x: 12, y: M.top + h / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${M.top + h / 2})` }, axis)
      .textContent = opts.ylabel || "";
    return { svg, sx, sy, w, h, width, height, x0, x1 };
  }

  /* Many points as one path of zero-length strokes with round caps: one element, however many points. */
  function dots(svg, xy, color, opacity, size, cls) {
    let d = "";
    for (const [x, y] of xy) d += `M${x.toFixed(1)},${y.toFixed(1)}h0`;
    el("path", { d, stroke: color, "stroke-opacity": opacity, "stroke-width": size, "stroke-linecap": "round",
                 fill: "none", class: cls }, svg);
  }

  const tip = () => document.getElementById("tip");
  function showTip(html, event) {
    const t = tip();
    if (!t) return;
    t.innerHTML = html;
    t.hidden = false;
    const pad = 14;
    let left = event.clientX + pad, top = event.clientY + pad;
    const r = t.getBoundingClientRect();
    if (left + r.width > window.innerWidth - 4) left = event.clientX - r.width - pad;
    if (top + r.height > window.innerHeight - 4) top = event.clientY - r.height - pad;
    t.style.left = left + "px";
    t.style.top = top + "px";
  }
  function hideTip() { const t = tip(); if (t) t.hidden = true; }

  function empty(container, text) {
    container.textContent = "";
    const svg = el("svg", { viewBox: "0 0 600 80", width: "100%", height: 80 }, container);
    el("text", { x: 300, y: 45, "text-anchor": "middle", class: "empty" }, svg).textContent = text;
  }

  /* series: [{label, color, points: [[x, y]], step: bool, band: [[x, lo, hi]], dots: [[x, y]]}]
     opts: {xlabel, ylabel, xMax, hover(x) -> html or null} */
  function line(container, series, opts) {
    const xs = [], ys = [];
    for (const s of series) {
      for (const p of s.points || []) { xs.push(p[0]); ys.push(p[1]); }
      for (const b of s.band || []) { ys.push(b[1], b[2]); }
      for (const d of s.dots || []) { xs.push(d[0]); ys.push(d[1]); }
    }
    if (!xs.length) { empty(container, opts.emptyText || "no data yet"); return; }
    const xMax = Math.max(opts.xMax || 0, ...xs);
    const f = frame(container, { ...opts, x: [opts.xMin !== undefined ? opts.xMin : Math.min(1, ...xs), xMax],
                                 y: extent(ys, 0.06), integerX: true });
    series.forEach((s, i) => {
      const color = s.color || PALETTE[i % PALETTE.length];
      if (s.dots && s.dots.length) dots(f.svg, s.dots.map(d => [f.sx(d[0]), f.sy(d[1])]), color, 0.25, 4, "values");
      if (s.band && s.band.length > 1) {
        let band = s.band;
        if (s.step) {  // a step band: each value holds until the next point
          band = [];
          s.band.forEach((b, k) => { if (k) band.push([b[0], s.band[k - 1][1], s.band[k - 1][2]]); band.push(b); });
        }
        const top = band.map(b => `${f.sx(b[0])},${f.sy(b[2])}`);
        const bottom = band.slice().reverse().map(b => `${f.sx(b[0])},${f.sy(b[1])}`);
        el("polygon", { points: top.concat(bottom).join(" "), fill: color, "fill-opacity": 0.15, stroke: "none" }, f.svg);
      }
      const pts = s.points || [];
      if (!pts.length) return;
      let d = `M${f.sx(pts[0][0])},${f.sy(pts[0][1])}`;
      for (let k = 1; k < pts.length; k++) {
        d += s.step ? `H${f.sx(pts[k][0])}V${f.sy(pts[k][1])}` : `L${f.sx(pts[k][0])},${f.sy(pts[k][1])}`;
      }
      if (s.step && s.until && s.until > pts[pts.length - 1][0]) d += `H${f.sx(s.until)}`;
      el("path", { d, fill: "none", stroke: color, "stroke-width": 2, class: "series" }, f.svg);
      if (s.marks) {
        const g = el("g", { fill: color }, f.svg);
        for (const p of pts) el("circle", { cx: f.sx(p[0]), cy: f.sy(p[1]), r: 3 }, g);
      }
    });
    if (opts.hover) {
      const cursor = el("line", { y1: M.top, y2: M.top + f.h, stroke: "#98a2b3", "stroke-dasharray": "3 3", visibility: "hidden" }, f.svg);
      const hit = el("rect", { x: M.left, y: M.top, width: f.w, height: f.h, fill: "transparent", class: "hit" }, f.svg);
      hit.addEventListener("mousemove", ev => {
        const box = f.svg.getBoundingClientRect();
        const px = (ev.clientX - box.left) * (f.width / box.width);
        const x = Math.round(f.x0 + (px - M.left) / f.w * (f.x1 - f.x0));
        const html = opts.hover(x);
        if (!html) { hideTip(); cursor.setAttribute("visibility", "hidden"); return; }
        cursor.setAttribute("x1", f.sx(x)); cursor.setAttribute("x2", f.sx(x)); cursor.setAttribute("visibility", "visible");
        showTip(html, ev);
      });
      hit.addEventListener("mouseleave", () => { hideTip(); cursor.setAttribute("visibility", "hidden"); });
    }
  }

  /* points / front: [{x, y, ...}]; opts: {xlabel, ylabel, hover(p) -> html} */
  function scatter(container, points, front, opts) {
    const all = points.concat(front);
    if (!all.length) { empty(container, opts.emptyText || "no trials with both metrics yet"); return; }
    const f = frame(container, { ...opts, x: extent(all.map(p => p.x)), y: extent(all.map(p => p.y), 0.06) });
    dots(f.svg, points.map(p => [f.sx(p.x), f.sy(p.y)]), "#667085", 0.4, 5, "cloud");
    if (front.length) {
      const d = front.map((p, k) => `${k ? "L" : "M"}${f.sx(p.x)},${f.sy(p.y)}`).join("");
      el("path", { d, fill: "none", stroke: "#dc6803", "stroke-width": 1.5 }, f.svg);
      const gf = el("g", { fill: "#dc6803", class: "front" }, f.svg);
      for (const p of front) el("circle", { cx: f.sx(p.x), cy: f.sy(p.y), r: 4.2 }, gf);
    }
    if (opts.hover) {
      const ring = el("circle", { r: 7, fill: "none", stroke: "#111827", "stroke-width": 1.5, visibility: "hidden" }, f.svg);
      const hit = el("rect", { x: M.left, y: M.top, width: f.w, height: f.h, fill: "transparent", class: "hit" }, f.svg);
      hit.addEventListener("mousemove", ev => {
        const box = f.svg.getBoundingClientRect();
        const k = f.width / box.width;
        const mx = (ev.clientX - box.left) * k, my = (ev.clientY - box.top) * k;
        let best = null, bestD = 14 * 14;
        for (const p of all) {
          const dx = f.sx(p.x) - mx, dy = f.sy(p.y) - my, dd = dx * dx + dy * dy;
          if (dd < bestD) { bestD = dd; best = p; }
        }
        if (!best) { hideTip(); ring.setAttribute("visibility", "hidden"); return; }
        ring.setAttribute("cx", f.sx(best.x)); ring.setAttribute("cy", f.sy(best.y)); ring.setAttribute("visibility", "visible");
        showTip(opts.hover(best, front.includes(best)), ev);
      });
      hit.addEventListener("mouseleave", () => { hideTip(); ring.setAttribute("visibility", "hidden"); });
    }
  }

  function legend(container, items) {
    const box = document.createElement("div");
    box.className = "legend";
    items.forEach((item, i) => {
      const span = document.createElement("span");
      const sw = document.createElement("i");
      sw.style.background = item.color || PALETTE[i % PALETTE.length];
      span.appendChild(sw);
      span.appendChild(document.createTextNode(item.label));
      box.appendChild(span);
    });
    container.appendChild(box);
  }

  return { line, scatter, legend, fmt, PALETTE, hideTip };
})();
