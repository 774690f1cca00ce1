// Quality page: drift rounds over time, one uPlot chart per model x prompt version
// (data from the element's data-series: no inline script under the CSP).
"use strict";
(function () {
  var COLOURS = ["#8250df", "#1a7f37", "#bc4c00", "#0969da", "#6e7781", "#bf3989",
                 "#116329", "#953800"];

  function noLine() { return null; }

  // Log-scale ticks: 1, 0.1, 0.01, 0.001, then 1e-4...; one label a decade.
  function pLabels(u, splits) {
    return splits.map(function (v) {
      if (v === null || v <= 0) return "";
      var exp = Math.round(Math.log10(v));
      if (Math.abs(Math.log10(v) - exp) > 1e-9) return "";
      return exp >= -3 ? String(Number(v.toPrecision(1))) : "1e" + exp;
    });
  }

  function draw(el) {
    if (el.dataset.drawn) return;
    var g = JSON.parse(el.dataset.series);
    var drifted = g.min_p.map(function (p, i) { return g.drifted[i] ? p : null; });
    var series = [{},
      {label: "lowest p", stroke: "#1f6feb", width: 2, spanGaps: true,
       points: {show: true, size: 7}},
      {label: "drifted", stroke: "#cf222e", fill: "#cf222e", paths: noLine,
       points: {show: true, size: 10, fill: "#cf222e"}},
      {label: "alpha", stroke: "#57606a", width: 1, dash: [6, 4], points: {show: false}}];
    var data = [g.at, g.min_p, drifted, g.alpha];
    Object.keys(g.tests).forEach(function (name, i) {
      series.push({label: name, stroke: COLOURS[i % COLOURS.length], width: 1, show: false,
                   spanGaps: true, points: {show: true, size: 4}});
      data.push(g.tests[name]);
    });
    var width = Math.max(280, Math.min(el.clientWidth || 600, 1100));
    var plot = new window.uPlot({
      width: width, height: 220,
      scales: {
        x: {time: true, range: timeRange},
        y: {distr: 3}  // log: p-values span many orders of magnitude
      },
      series: series,
      axes: [{}, {label: "p-value", size: 70, values: pLabels, space: 18}]
    }, data, el);
    el.dataset.drawn = "1";
    el.dataset.points = String(g.min_p.filter(function (p) { return p !== null; }).length);
    el.uplot = plot;
  }

  function timeRange(u, lo, hi) {  // one point: an hour either side
    return lo === hi ? [lo - 3600, hi + 3600] : [lo, hi];
  }

  // An SLO: burn rate per window (left axis) and error budget left (right, %).
  function drawSlo(el) {
    if (el.dataset.drawn) return;
    var g = JSON.parse(el.dataset.series);
    var series = [{}, {label: "budget left", scale: "budget", stroke: "#57606a", width: 1,
                       dash: [6, 4], value: function (u, v) {
                         return v === null ? "--" : (100 * v).toFixed(1) + "%"; }}];
    var data = [g.at, g.budget];
    Object.keys(g.burn).forEach(function (w, i) {
      series.push({label: "burn " + w, stroke: COLOURS[i % COLOURS.length], width: 2,
                   spanGaps: true, points: {show: true, size: 5}});
      data.push(g.burn[w]);
    });
    var width = Math.max(280, Math.min(el.clientWidth || 600, 1100));
    el.uplot = new window.uPlot({
      width: width, height: 200,
      scales: {x: {time: true, range: timeRange}, budget: {range: [0, 1]}},
      series: series,
      axes: [{}, {label: "burn rate", size: 60},
             {scale: "budget", side: 1, size: 50, grid: {show: false},
              values: function (u, splits) {
                return splits.map(function (v) { return Math.round(100 * v) + "%"; }); }}]
    }, data, el);
    el.dataset.drawn = "1";
    el.dataset.points = String(g.at.length);
  }

  window.addEventListener("load", function () {
    if (!window.uPlot) return;
    document.querySelectorAll(".drift-chart[data-series]").forEach(draw);
    document.querySelectorAll(".slo-chart[data-series]").forEach(drawSlo);
  });
})();
