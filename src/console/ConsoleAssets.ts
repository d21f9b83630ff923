/**
 * The files the console's pages load, all served by the console itself (no CDN: it works offline and shows
 * nothing a third party could change): uPlot's browser build from the installed `uplot` package, and the
 * console's own script and style sheet, kept here as text so they ship inside the package's `dist/`.
 */
import { Data, Effect } from "effect"
import * as fs from "node:fs"
import * as NodeModule from "node:module"

export interface Asset {
  readonly contentType: string
  readonly body: Uint8Array
}

/** uPlot's files could not be read (the `uplot` dependency is missing). */
export class AssetsUnavailable extends Data.TaggedError("AssetsUnavailable")<{ readonly detail: string }> {}

/**
 * The chart, the "verify now" button and nothing else: plain ES2017 in the browser, reading the data the
 * page embeds (`#refusal-series`) and the progress the server streams (`/verify`, server-sent events).
 */
const SCRIPT = String.raw`(function () {
  "use strict";
  var palette = ["#1f5fa8", "#b3261e", "#1e7b34", "#8a4baf", "#a15c00", "#00727a", "#5f6368", "#c2185b", "#37474f"];
  var chart = document.getElementById("refusal-chart");
  var dataNode = document.getElementById("refusal-series");
  if (chart && dataNode && window.uPlot) {
    var data = JSON.parse(dataNode.textContent);
    if (data.buckets.length > 0) {
      var plot = new window.uPlot({
        width: Math.max(320, Math.min(1100, chart.clientWidth || 800)),
        height: 300,
        scales: { x: { time: true } },
        series: [{}].concat(data.series.map(function (s, i) {
          return { label: s.key, stroke: palette[i % palette.length], width: 2, points: { show: true, size: 7 } };
        })),
        axes: [{}, { label: "refusals" }]
      }, [data.buckets].concat(data.series.map(function (s) { return s.counts; })), chart);
      plot.over.addEventListener("click", function () {
        var index = plot.cursor.idx;
        if (index === null || index === undefined) return;
        var start = data.buckets[index];
        var url = new URL(data.link, window.location.href);
        url.searchParams.set("from", new Date(start * 1000).toISOString());
        url.searchParams.set("to", new Date((start + data.bucketSeconds) * 1000).toISOString());
        url.hash = "list";
        window.location.href = url.toString();
      });
      chart.setAttribute("data-ready", "true");
    }
  }
  var button = document.getElementById("verify-now");
  if (button) {
    var progress = document.getElementById("verify-progress");
    var phase = document.getElementById("verify-phase");
    var status = document.getElementById("verify-status");
    var checkpoint = document.getElementById("checkpoint-block");
    button.addEventListener("click", function () {
      button.disabled = true;
      progress.value = 0;
      phase.textContent = "starting";
      status.setAttribute("aria-busy", "true");
      var source = new EventSource("/verify");
      var finish = function (text) {
        source.close();
        button.disabled = false;
        status.removeAttribute("aria-busy");
        phase.textContent = text;
      };
      source.addEventListener("progress", function (event) {
        var p = JSON.parse(event.data);
        progress.max = Math.max(1, p.total);
        progress.value = p.done;
        phase.textContent = (p.phase === "chain" ? "rows checked " : "checkpoint leaves hashed ") + p.done + " / " + p.total;
      });
      source.addEventListener("done", function (event) {
        var d = JSON.parse(event.data);
        status.innerHTML = d.status;
        if (checkpoint) checkpoint.innerHTML = d.checkpoint;
        finish("done");
      });
      source.addEventListener("failed", function (event) {
        status.textContent = "The verification could not read the ledger: " + JSON.parse(event.data).message;
        finish("failed");
      });
      source.onerror = function () { finish("connection lost"); };
    });
  }
})();
`

const STYLE = `:root { color-scheme: light; font-family: system-ui, sans-serif; color: #1b1b1b; background: #fff; }
body { margin: 0; }
header { background: #16324f; color: #fff; padding: 0.5rem 1rem; display: flex; flex-wrap: wrap; align-items: center; gap: 1rem; }
header .brand { margin: 0; font-weight: 600; }
header .ledger { font-weight: 400; font-family: ui-monospace, monospace; }
header .ro { font-size: 0.8rem; border: 1px solid #fff; border-radius: 3px; padding: 0 0.3rem; }
nav ul { list-style: none; margin: 0; padding: 0; display: flex; gap: 1rem; }
nav a { color: #fff; }
nav a[aria-current="page"] { font-weight: 700; text-decoration-thickness: 3px; }
main { padding: 0 1rem 2rem; max-width: 1150px; }
a { color: #0b57a4; }
code, pre { font-family: ui-monospace, monospace; font-size: 0.9rem; }
.hash, dd code { word-break: break-all; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.25rem 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { text-align: left; padding: 0.2rem 0.6rem; border-bottom: 1px solid #ccc; }
caption { text-align: left; font-weight: 600; }
.columns { display: flex; flex-wrap: wrap; gap: 2rem; }
.columns h2 { flex-basis: 100%; }
.status.ok { border-left: 6px solid #1e7b34; padding-left: 0.6rem; }
.status.failed { border-left: 6px solid #b3261e; padding-left: 0.6rem; }
.status.pending { border-left: 6px solid #767676; padding-left: 0.6rem; }
.muted { color: #555; }
pre.payload { background: #f4f4f4; padding: 0.75rem; overflow: auto; max-height: 28rem; }
fieldset { border: 1px solid #ccc; display: flex; flex-wrap: wrap; gap: 0.5rem; align-items: center; }
button { font: inherit; padding: 0.2rem 0.8rem; }
#refusal-chart { min-height: 320px; }
`

// Resolved from this module, as Node resolves a dependency of the package (not named `require`: the test
// bundles declare one).
const packageResolver = NodeModule.createRequire(import.meta.url)

const readPackageFile = (specifier: string): Effect.Effect<Uint8Array, AssetsUnavailable> =>
  Effect.try({
    try: () => fs.readFileSync(packageResolver.resolve(specifier)),
    catch: (error) => new AssetsUnavailable({ detail: `${specifier}: ${String(error)}` })
  })

/** Every asset by its name under `/assets/`, read once. */
export const load: Effect.Effect<ReadonlyMap<string, Asset>, AssetsUnavailable> = Effect.gen(function*() {
  const uplotScript = yield* readPackageFile("uplot/dist/uPlot.iife.min.js")
  const uplotStyle = yield* readPackageFile("uplot/dist/uPlot.min.css")
  return new Map<string, Asset>([
    ["uPlot.iife.min.js", { contentType: "text/javascript; charset=utf-8", body: uplotScript }],
    ["uPlot.min.css", { contentType: "text/css; charset=utf-8", body: uplotStyle }],
    ["console.js", { contentType: "text/javascript; charset=utf-8", body: Buffer.from(SCRIPT, "utf8") }],
    ["console.css", { contentType: "text/css; charset=utf-8", body: Buffer.from(STYLE, "utf8") }]
  ])
})
