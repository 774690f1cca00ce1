"""The web console at /ui: overview, traces, playground, keys, prompts
(docs/console.md). Server-rendered pages, two small vendored libraries
(HTMX, uPlot) and two script files of our own; no build step."""
