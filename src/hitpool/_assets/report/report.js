// hit's HTML report: draws each chart of the #hit-data block with uPlot (inlined above).
// Python decides every number (hit/charts.py); this only maps a chart's description onto
// uPlot's options. hitd's dashboard loads this file too and calls hitReport.draw(chart, el)
// for a `hit` job's charts, so that both pages draw the same charts the same way.
(function () {
  "use strict";

  // x = 1 / (1 - p) on the percentile axes: 1 -> "0%", 10 -> "90%", 100 -> "99%", ...
  function nines(x) {
    if (x <= 1) return "0%";
    const p = 100 * (1 - 1 / x);
    const digits = Math.max(0, Math.round(Math.log10(x)) - 2);
    return p.toFixed(digits) + "%";
  }

  function ms(v) {
    if (v == null) return "";
    if (v < 1) return (v * 1000).toPrecision(3) + "µs";
    if (v < 1000) return v.toPrecision(3) + "ms";
    return (v / 1000).toPrecision(4) + "s";
  }

  // Whole seconds on a time axis, at steps people count in.
  const SECONDS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

  // Ticks at 1, 10, 100, ... only (0%, 90%, 99%, ...), within the axis' range.
  function decades(u, axisIdx, min, max) {
    const out = [];
    for (let x = 1; x <= max * 1.0001; x *= 10) if (x >= min / 1.0001) out.push(x);
    return out;
  }

  function scale(kind) {
    return kind === "log" || kind === "nines" ? { time: false, distr: 3, log: 10 } : { time: false };
  }

  function positive(values) {
    return values.map(function (v) { return v == null || v <= 0 ? null : v; });
  }

  function draw(c, el) {
    const ylog = c.y.kind === "log";
    const drawable = (v) => v != null && (!ylog || v > 0);
    if (!c.series.some((s) => s.values.some(drawable))) {  // e.g. no complete response: no latency
      const h = document.createElement("h3");
      const p = document.createElement("p");
      h.textContent = c.title;  // titles hold step names: text, never markup
      p.textContent = "no data";
      p.className = "nodata";
      el.classList.add("empty");
      el.append(h, p);
      return;
    }
    const xAxis = { label: c.x.label };
    if (c.x.kind === "nines") {
      xAxis.splits = decades;
      xAxis.values = function (u, vals) { return vals.map(nines); };
    }
    if (c.x.kind === "time") xAxis.incrs = SECONDS;
    if (c.x.kind === "log") xAxis.values = function (u, vals) { return vals.map(ms); };
    const yAxis = { label: c.y.label, size: 70 };
    if (ylog) yAxis.values = function (u, vals) { return vals.map(ms); };
    const series = [{
      label: c.x.label,
      value: c.x.kind === "nines" ? function (u, v) { return v == null ? "" : nines(v); } : undefined,
    }];
    c.series.forEach(function (s) {
      const one = { label: s.label, stroke: s.color, width: 1.5, points: { show: c.xs.length < 80 } };
      if (ylog) one.value = function (u, v) { return ms(v); };
      if (c.bars) {
        one.fill = s.color + "88";
        one.paths = uPlot.paths.bars({ size: [0.9, 40] });
        one.points = { show: false };
      }
      series.push(one);
    });
    const opts = {
      title: c.title,
      width: Math.max(320, el.clientWidth || 900),
      height: el.classList.contains("small") ? 220 : 290,
      scales: { x: scale(c.x.kind), y: ylog ? scale("log") : { time: false, range: function (u, lo, hi) { return [0, hi > 0 ? hi * 1.05 : 1]; } } },
      axes: [xAxis, yAxis],
      series: series,
    };
    const cols = [c.xs].concat(c.series.map(function (s) { return ylog ? positive(s.values) : s.values; }));
    el.uplot = new uPlot(opts, cols, el);
  }

  window.hitReport = { draw: draw };
  const block = document.getElementById("hit-data");
  if (block) {
    JSON.parse(block.textContent).charts.forEach(function (c) {
      const el = document.getElementById("chart-" + c.id);
      if (el) draw(c, el);
    });
  }
})();
