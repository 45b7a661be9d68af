// The tag page's two plots (prefixes, address space), drawn in the browser by uPlot (vendored beside this file,
// MIT) from the series the page carries in <script type="application/json" id="tag-series">: one point per
// publication, the publications that started a version marked with a larger dot. The server sends numbers, not
// drawings (two server-drawn 260-week plots took pygal 50-80 ms). Without JavaScript each figure shows the same
// plot as an SVG image drawn by pygal on the server (its <noscript>).
(function () {
  "use strict";
  var source = document.getElementById("tag-series");
  if (!source || !window.uPlot) { return; }
  var data = JSON.parse(source.textContent);
  var days = data.dates.map(function (day) { return Date.parse(day + "T00:00:00Z") / 1000; });
  var changed = data.changed;  // indices of the publications that started a version
  var blue = "#1f6fb2", orange = "#d9822b";
  var plots = {
    prefixes: {title: data.tag + ": prefixes per family",
               lines: [["IPv4 prefixes", "v4_prefixes", blue], ["IPv6 prefixes", "v6_prefixes", orange]]},
    space: {title: data.tag + ": address space per family",
            lines: [["IPv4 addresses", "v4_addresses", blue], ["IPv6 /64 networks", "v6_networks_64", orange]]}
  };
  var some = function (values) { return values.some(function (v) { return v > 0; }); };
  var whole = function (u, values) { return values.map(function (v) { return Number.isInteger(v) ? v.toLocaleString() : ""; }); };
  // Wide enough for the longest label (the default width cuts "106,000,000").
  var fit = function (u, values) {
    var longest = (values || []).reduce(function (n, v) { return Math.max(n, String(v).length); }, 4);
    return 16 + 8 * longest;
  };
  // Past 60 changes the dots would run together at any useful size: smaller ones.
  var dot = changed.length <= 60 ? 8 : 4;
  var utc = function (seconds) { return uPlot.tzDate(new Date(seconds * 1000), "Etc/UTC"); };
  window.tagPlots = {};
  document.querySelectorAll("figure.plot[data-kind]").forEach(function (figure) {
    var plot = plots[figure.dataset.kind];
    if (!plot) { return; }
    // IPv6 space gets its own axis (its units dwarf IPv4's), but only when both families have some.
    var second = figure.dataset.kind === "space" && some(data.v4_addresses) && some(data.v6_networks_64);
    var series = [{label: "publication", value: "{YYYY}-{MM}-{DD}"}];
    var columns = [days];
    plot.lines.forEach(function (line, i) {
      series.push({label: line[0], stroke: line[2], width: 2, scale: second && i === 1 ? "y2" : "y",
                   value: function (u, v) { return v == null ? "" : v.toLocaleString(); },
                   points: {size: dot, fill: line[2], filter: function () { return changed; }}});
      columns.push(data[line[1]]);
    });
    var axes = [{}, {scale: "y", values: whole, size: fit}];
    if (second) { axes.push({scale: "y2", side: 1, values: whole, size: fit, grid: {show: false}}); }
    var width = Math.min(900, Math.max(320, figure.clientWidth || 900));
    var chart = new uPlot({title: plot.title, width: width, height: 360, tzDate: utc, series: series, axes: axes,
                           scales: {x: {time: true}}, cursor: {drag: {x: false, y: false}}}, columns, figure);
    figure.dataset.points = String(chart.data[0].length);
    figure.dataset.changes = String(changed.length);
    window.tagPlots[figure.dataset.kind] = chart;
  });
})();
