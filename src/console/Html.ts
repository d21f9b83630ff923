/**
 * HTML text for the console's server-rendered pages: escaping (every value from the ledger is hostile text),
 * JSON safe to embed in a page, and the page frame (navigation, assets, landmarks) every page shares.
 */

const ESCAPES: Readonly<Record<string, string>> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  "\"": "&quot;",
  "'": "&#39;"
}

/** Text as HTML text or attribute value. */
export const escape = (text: unknown): string => String(text).replace(/[&<>"']/g, (c) => ESCAPES[c]!)

/** A value as JSON inside `<script type="application/json">`: no `</script>` or comment can close it. */
export const embedJson = (value: unknown): string =>
  JSON.stringify(value).replace(/</g, "\\u003c").replace(/>/g, "\\u003e").replace(/&/g, "\\u0026")

/** A query string from the defined entries of `params` (`?a=1&b=2`, or "" when there is none). */
export const query = (params: Readonly<Record<string, string | number | undefined>>): string => {
  const search = new URLSearchParams()
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== "") search.set(key, String(value))
  }
  const text = search.toString()
  return text.length === 0 ? "" : `?${text}`
}

export type Section = "overview" | "refusals" | "sessions" | "tools" | "row"

const NAV: ReadonlyArray<readonly [Section, string, string]> = [
  ["overview", "/", "Overview"],
  ["refusals", "/refusals", "Refusals"],
  ["sessions", "/sessions", "Sessions"],
  ["tools", "/tools", "Tool pins"]
]

/** A whole page: `body` is trusted HTML (already escaped), `title` plain text. */
export const page = (options: {
  readonly title: string
  readonly section: Section
  readonly ledger: string
  readonly body: string
  readonly chart?: boolean
}): string =>
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(options.title)} · agent-ledger console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/console.css">
${options.chart === true ? `<link rel="stylesheet" href="/assets/uPlot.min.css">` : ""}
</head>
<body>
<header>
<p class="brand">agent-ledger console <span class="ledger">${
    escape(options.ledger)
  }</span> <span class="ro">read-only</span></p>
<nav aria-label="Sections"><ul>${
    NAV.map(([section, href, label]) =>
      `<li><a href="${href}"${section === options.section ? ` aria-current="page"` : ""}>${label}</a></li>`
    ).join("")
  }</ul></nav>
</header>
<main>
<h1>${escape(options.title)}</h1>
${options.body}
</main>
${options.chart === true ? `<script src="/assets/uPlot.iife.min.js"></script>` : ""}
<script src="/assets/console.js"></script>
</body>
</html>
`
