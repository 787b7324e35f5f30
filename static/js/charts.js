// Charts: every element with data-chart-src (a URL of the portal's chart JSON) or data-chart (the
// JSON itself) gets uPlot charts. No inline script anywhere: the data comes as JSON from the portal.
// The JSON: {"available": bool, "message": str, "charts": [{"title", "unit", "kind", "x": [s],
// "series": [{"label", "values"}]}]}; without charts the element shows the message ("no metrics").
(function () {
  "use strict";
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d"];

  function text(el, message) {
    var p = document.createElement("p");
    p.className = "muted chart-message";
    p.textContent = message;
    el.appendChild(p);
  }

  function draw(el, chart) {
    var box = document.createElement("figure");
    box.className = "chart";
    var caption = document.createElement("figcaption");
    caption.textContent = chart.title || "";
    box.appendChild(caption);
    el.appendChild(box);
    var unit = chart.unit || "";
    var series = [{label: el.dataset.timeLabel || "Time"}];  // the page says "Time" in its language
    var data = [chart.x];
    chart.series.forEach(function (s, i) {
      var color = COLORS[i % COLORS.length];
      var spec = {label: s.label, stroke: color, width: 1.5, spanGaps: false,
                  value: function (u, v) { return v == null ? "—" : v + " " + unit; }};
      if (chart.kind === "bars") {
        spec.fill = color + "55";
        spec.paths = uPlot.paths.bars({size: [0.8, 40]});
      }
      series.push(spec);
      data.push(s.values);
    });
    var width = Math.max(280, Math.min(el.clientWidth || 800, 1100));
    // The time axis spans the data shown: one sample alone must not stretch it over years.
    var xs = chart.x || [], x0 = xs.length ? xs[0] : 0, x1 = xs.length ? xs[xs.length - 1] : 0;
    var xscale = {time: true};
    if (xs.length && x1 - x0 < 60) { xscale.range = function () { return [x0 - 300, x1 + 300]; }; }
    else if (xs.length) { xscale.range = function () { return [x0, x1]; }; }
    var opts = {width: width, height: 220, series: series, scales: {x: xscale},
                axes: [{}, {label: unit, size: 60}], legend: {live: true}};
    if (unit === "%") { opts.scales.y = {range: [0, 100]}; }
    box.dataset.rendered = "1";
    return new uPlot(opts, data, box);
  }

  function render(el, payload) {
    el.replaceChildren();
    if (!payload.available || !payload.charts || !payload.charts.length) {
      text(el, payload.message || el.dataset.noMetrics || "No metrics.");
      el.dataset.state = "empty";
      return;
    }
    payload.charts.forEach(function (c) { draw(el, c); });
    el.dataset.state = "rendered";
  }

  // data-chart-refresh="N": fetched again every N seconds while the element is on the page (a
  // running job's or a node's charts follow the samples; "no metrics yet" turns into a chart).
  function load(el) {
    if (el.dataset.chart) {
      try { render(el, JSON.parse(el.dataset.chart)); } catch (e) { render(el, {available: false}); }
      return;
    }
    fetch(el.dataset.chartSrc, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : {available: false}; })
      .then(function (payload) { render(el, payload); })
      .catch(function () { render(el, {available: false}); })
      .then(function () {
        var every = parseInt(el.dataset.chartRefresh || "0", 10);
        if (every > 0 && document.body.contains(el)) {
          window.setTimeout(function () { if (document.body.contains(el)) { load(el); } }, every * 1000);
        }
      });
  }

  function init(root) {
    if (typeof uPlot === "undefined") { return; }
    (root || document).querySelectorAll("[data-chart-src],[data-chart]").forEach(function (el) {
      if (!el.dataset.state) { el.dataset.state = "loading"; load(el); }
    });
  }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  // after any swap, out-of-band parts too (a job page's GPU card comes again when its state moves)
  document.addEventListener("htmx:afterSettle", function () { init(document); });
})();
