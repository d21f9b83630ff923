/**
 * The console's pages as HTML, from what `ConsoleQueries` and `ConsoleVerifier` read: pure functions of
 * their data, so what a page says is what the queries returned. Figures carry `data-figure` attributes, the
 * names `agent-ledger stats --json` uses, so a reader (or a test) can compare them with the CLI's.
 */
import { Option } from "effect"
import type * as ToolPins from "../guard/ToolPins.js"
import type * as LedgerQuery from "../query/LedgerQuery.js"
import type * as ConsoleQueries from "./ConsoleQueries.js"
import type * as ConsoleVerifier from "./ConsoleVerifier.js"
import { embedJson, escape, page, query } from "./Html.js"

const figure = (name: string, value: string | number) => `<span data-figure="${escape(name)}">${escape(value)}</span>`

const countTable = (
  caption: string,
  counts: Readonly<Record<string, number>>,
  figurePrefix: string,
  href: (key: string) => string
) => {
  const entries = Object.entries(counts).sort(([a, x], [b, y]) => y - x || a.localeCompare(b))
  if (entries.length === 0) return `<p>No ${escape(caption.toLowerCase())}.</p>`
  return `<table class="counts"><caption>${escape(caption)}</caption>
<thead><tr><th scope="col">${
    escape(figurePrefix === "refusalsByRule" ? "Rule" : "Agent")
  }</th><th scope="col">Refusals</th></tr></thead>
<tbody>${
    entries.map(([key, n]) =>
      `<tr><td><a href="${escape(href(key))}">${escape(key)}</a></td><td data-figure="${figurePrefix}" data-key="${
        escape(key)
      }">${n}</td></tr>`
    ).join("")
  }</tbody></table>`
}

/** The verification status block (also sent, rendered, at the end of a "verify now" run). */
export const verifyStatus = (outcome: Option.Option<ConsoleVerifier.Outcome>): string =>
  Option.match(outcome, {
    onNone: () => `<p class="status pending" data-verify="none">Not verified yet in this console.</p>`,
    onSome: (o) => {
      const report = o.report
      const failures = report.failures.slice(0, 20).map((f) =>
        `<li><a href="/rows/${f.sequence}">sequence ${f.sequence}</a>: ${escape(f.kind)} — ${escape(f.message)}</li>`
      ).join("")
      const checkpoint = o.checkpoint.status === "none"
        ? "no stored checkpoint"
        : o.checkpoint.status === "extends"
        ? `extends the checkpoint of ${o.checkpoint.treeSize} leaves`
        : o.checkpoint.status === "unreadable"
        ? `checkpoint unreadable: ${escape(o.checkpoint.detail)}`
        : escape(o.checkpoint.detail)
      return `<div class="status ${o.ok ? "ok" : "failed"}" data-verify="${o.ok ? "ok" : "failed"}">
<p><strong>${
        o.ok ? "OK" : "FAILED"
      }</strong>: ${report.rowsChecked} rows checked, ${report.failureCount} failure(s); signatures ${report.signatures.valid} valid, ${report.signatures.invalid} invalid, ${report.signatures.unknownKey} with an unknown key; ${checkpoint}. <span class="muted">Finished ${
        escape(o.finishedAt)
      }.</span></p>
${failures.length > 0 ? `<ul class="failures">${failures}</ul>` : ""}
</div>`
    }
  })

/** The last checkpoint and whether the ledger still extends it (as far as the last run checked). */
export const checkpointBlock = (
  checkpoint: Option.Option<ConsoleVerifier.StoredCheckpointView>,
  outcome: Option.Option<ConsoleVerifier.Outcome>
) =>
  Option.match(checkpoint, {
    onNone: () =>
      `<p data-checkpoint="none">No checkpoint stored. Make one with <code>agent-ledger checkpoint DB --private-key FILE</code>.</p>`,
    onSome: (c) => {
      const signature = c.signature === "checked"
        ? "signature checked with the console's key"
        : c.signature === "bad"
        ? `signature does NOT hold: ${escape(Option.getOrElse(c.problem, () => ""))}`
        : "signature not checked (start the console with --key to check it)"
      const checked = Option.flatMap(
        outcome,
        (o) =>
          o.checkpoint.status !== "none" && o.checkpoint.status !== "unreadable" && o.checkpoint.treeSize === c.treeSize
            ? Option.some(o.checkpoint)
            : Option.none()
      )
      const extendsText = Option.match(checked, {
        onNone: () => `<span data-extends="unknown">not checked yet: run “Verify now”</span>`,
        onSome: (r) =>
          r.status === "extends"
            ? `<span data-extends="yes">yes: the ledger's first ${r.treeSize} rows give its root</span>`
            : `<span data-extends="no">NO: ${escape(r.detail)}</span>`
      })
      return `<dl class="facts">
<dt>Log</dt><dd>${escape(c.origin)}</dd>
<dt>Tree size</dt><dd data-figure="checkpointSize">${c.treeSize}</dd>
<dt>Made</dt><dd>${escape(c.createdAt)}</dd>
<dt>Signature</dt><dd>${signature}</dd>
<dt>Ledger still extends it</dt><dd>${extendsText}</dd>
</dl>`
    }
  })

/** Refusals as table rows: each links to its row and its session. */
const refusalRows = (items: ReadonlyArray<ConsoleQueries.RefusalListItem>) =>
  items.map((item) =>
    `<tr><td><a href="/rows/${item.sequence}" data-row-link="${item.sequence}">${item.sequence}</a></td><td>${
      escape(item.timestamp)
    }</td><td>${escape(item.agentId)}</td><td>${escape(item.rule)}</td><td>${
      item.sessionId === null
        ? "-"
        : `<a href="/sessions/${encodeURIComponent(item.sessionId)}">${escape(item.sessionId)}</a>`
    }</td></tr>`
  ).join("")

const REFUSAL_HEAD =
  `<thead><tr><th scope="col">Sequence</th><th scope="col">Time</th><th scope="col">Agent</th><th scope="col">Rule</th><th scope="col">Session</th></tr></thead>`

/** Refusals shown on the overview (the latest). */
export const LATEST_REFUSALS = 10

export const overview = (options: {
  readonly ledger: string
  readonly data: ConsoleQueries.Overview
  /** The latest refusals, newest first. */
  readonly latest: ReadonlyArray<ConsoleQueries.RefusalListItem>
  readonly checkpoint: Option.Option<ConsoleVerifier.StoredCheckpointView>
  readonly outcome: Option.Option<ConsoleVerifier.Outcome>
}): string => {
  const { data } = options
  const head = Option.match(data.head, {
    onNone: () => "(empty)",
    onSome: (h) =>
      `<a href="/rows/${h.sequence}">sequence ${figure("headSequence", h.sequence)}</a> <code class="hash">${
        figure("headHash", h.entryHash)
      }</code>`
  })
  const body = `
<section aria-labelledby="h-ledger"><h2 id="h-ledger">Ledger</h2>
<dl class="facts">
<dt>Rows</dt><dd>${figure("rows", data.rows)}</dd>
<dt>Head</dt><dd>${head}</dd>
<dt>Signed rows (ed25519)</dt><dd>${figure("attestLevels.ed25519", data.attestLevels.ed25519 ?? 0)}</dd>
<dt>Unsigned rows</dt><dd>${figure("attestLevels.unsigned", data.attestLevels.unsigned ?? 0)}</dd>
<dt>Dead letters</dt><dd>${figure("deadLetters.pending", data.deadLetters.pending)} pending, ${
    figure("deadLetters.replayed", data.deadLetters.replayed)
  } replayed</dd>
<dt>Time span</dt><dd>${figure("firstTimestamp", Option.getOrElse(data.firstTimestamp, () => "-"))} .. ${
    figure("lastTimestamp", Option.getOrElse(data.lastTimestamp, () => "-"))
  }</dd>
<dt>Refusals</dt><dd><a href="/refusals">${figure("refusals", data.refusals)}</a></dd>
</dl></section>
<section aria-labelledby="h-latest" id="latest-refusals"><h2 id="h-latest">Latest refusals</h2>
${
    options.latest.length === 0
      ? "<p>No refusals.</p>"
      : `<table class="rows">${REFUSAL_HEAD}<tbody>${
        refusalRows(options.latest)
      }</tbody></table><p><a href="/refusals">All refusals, over time</a></p>`
  }
</section>
<section aria-labelledby="h-verify"><h2 id="h-verify">Verification</h2>
<div id="verify-status" aria-live="polite">${verifyStatus(options.outcome)}</div>
<p><button type="button" id="verify-now">Verify now</button>
<label for="verify-progress" class="muted">Progress</label> <progress id="verify-progress" max="1" value="0"></progress>
<span id="verify-phase" class="muted"></span></p>
</section>
<section aria-labelledby="h-checkpoint"><h2 id="h-checkpoint">Last checkpoint</h2>
<div id="checkpoint-block">${checkpointBlock(options.checkpoint, options.outcome)}</div>
</section>
<section aria-labelledby="h-top" class="columns"><h2 id="h-top">Refusals by rule and agent</h2>
${countTable("By rule", data.refusalsByRule, "refusalsByRule", (key) => `/refusals${query({ rule: key })}`)}
${countTable("By agent", data.refusalsByAgent, "refusalsByAgent", (key) => `/refusals${query({ agent: key })}`)}
</section>`
  return page({ title: "Overview", section: "overview", ledger: options.ledger, body })
}

const isoOf = (epochSeconds: number) => new Date(epochSeconds * 1000).toISOString()

export const refusals = (options: {
  readonly ledger: string
  readonly splitBy: ConsoleQueries.SplitBy
  readonly filter: ConsoleQueries.RefusalFilter
  readonly series: ConsoleQueries.RefusalSeries
  readonly list: {
    readonly items: ReadonlyArray<ConsoleQueries.RefusalListItem>
    readonly next: Option.Option<number>
  }
}): string => {
  const { filter, series, splitBy } = options
  const keep = { from: filter.from, to: filter.to, rule: filter.rule, agent: filter.agent }
  const total = series.series.reduce((sum, s) => sum + s.counts.reduce((a, b) => a + b, 0), 0)
  const chartData = {
    buckets: series.buckets,
    bucketSeconds: series.bucketSeconds,
    series: series.series,
    link: `/refusals${query({ split: splitBy, rule: filter.rule, agent: filter.agent })}`
  }
  const rows = refusalRows(options.list.items)
  const filters = [
    filter.rule === undefined ? "" : `rule ${escape(filter.rule)}`,
    filter.agent === undefined ? "" : `agent ${escape(filter.agent)}`,
    filter.from === undefined ? "" : `from ${escape(filter.from)}`,
    filter.to === undefined ? "" : `until ${escape(filter.to)}`
  ].filter((s) => s.length > 0)
  const toLocalInput = (iso: string | undefined) => iso === undefined ? "" : escape(iso.replace(/Z$/, "").slice(0, 19))
  const body = `
<form class="picker" method="get" action="/refusals">
<fieldset><legend>Time range and split</legend>
<label for="from">From (UTC)</label> <input type="datetime-local" step="1" id="from" name="from" value="${
    toLocalInput(filter.from)
  }">
<label for="to">Until (UTC)</label> <input type="datetime-local" step="1" id="to" name="to" value="${
    toLocalInput(filter.to)
  }">
<label for="split">Split by</label> <select id="split" name="split">
<option value="rule"${splitBy === "rule" ? " selected" : ""}>rule</option>
<option value="agent"${splitBy === "agent" ? " selected" : ""}>agent</option>
</select>
${filter.rule === undefined ? "" : `<input type="hidden" name="rule" value="${escape(filter.rule)}">`}
${filter.agent === undefined ? "" : `<input type="hidden" name="agent" value="${escape(filter.agent)}">`}
<button type="submit">Show</button> <a href="/refusals${query({ split: splitBy })}">Clear filters</a>
</fieldset>
</form>
<section aria-labelledby="h-chart"><h2 id="h-chart">Refusals over time, by ${splitBy}</h2>
<p class="muted"><span data-figure="seriesTotal">${total}</span> refusals in ${series.buckets.length} bucket(s) of ${series.bucketSeconds} s${
    filters.length > 0 ? `; ${filters.join(", ")}` : ""
  }. Click a point on the chart to list that bucket's refusals.</p>
<div id="refusal-chart" role="img" aria-label="Refusals per ${series.bucketSeconds} seconds, one line per ${splitBy}"></div>
<script type="application/json" id="refusal-series">${embedJson(chartData)}</script>
</section>
<section aria-labelledby="h-list" id="list"><h2 id="h-list">Refusals, newest first</h2>
${
    rows.length === 0
      ? "<p>No refusals match.</p>"
      : `<table class="rows">${REFUSAL_HEAD}<tbody>${rows}</tbody></table>`
  }
${
    Option.match(options.list.next, {
      onNone: () => "",
      onSome: (before) =>
        `<p><a href="/refusals${query({ split: splitBy, ...keep, before })}#list">Older refusals</a></p>`
    })
  }
</section>`
  return page({ title: "Refusals", section: "refusals", ledger: options.ledger, body, chart: true })
}

/** The refusal list of one chart bucket: its `from` and `to`. */
export const bucketRange = (start: number, width: number) => ({ from: isoOf(start), to: isoOf(start + width) })

const prettyPayload = (payload: unknown): string => {
  if (typeof payload !== "string") return escape(String(payload))
  try {
    return escape(JSON.stringify(JSON.parse(payload), null, 2))
  } catch {
    return escape(payload)
  }
}

/** The session a row belongs to: a refusal's `journal`, a seal's `session_id`. */
export const sessionOf = (
  payload: unknown
): Option.Option<{ readonly sessionId: string; readonly entry: Option.Option<number> }> => {
  if (typeof payload !== "string") return Option.none()
  try {
    const parsed = JSON.parse(payload) as {
      journal?: { session_id?: unknown; sequence?: unknown }
      action?: { payload?: { session_id?: unknown } }
    }
    const journal = parsed.journal
    if (typeof journal?.session_id === "string") {
      return Option.some({
        sessionId: journal.session_id,
        entry: typeof journal.sequence === "number" ? Option.some(journal.sequence) : Option.none()
      })
    }
    const sealed = parsed.action?.payload?.session_id
    return typeof sealed === "string" ? Option.some({ sessionId: sealed, entry: Option.none() }) : Option.none()
  } catch {
    return Option.none()
  }
}

export const row = (options: {
  readonly ledger: string
  readonly stored: Record<string, unknown>
  readonly receipt: { readonly available: true } | { readonly available: false; readonly detail: string }
}): string => {
  const r = options.stored
  const sequence = Number(r.sequence)
  const session = sessionOf(r.payload)
  const field = (label: string, value: unknown, name: string) =>
    `<dt>${escape(label)}</dt><dd><code data-field="${name}">${value === null ? "(none)" : escape(value)}</code></dd>`
  const body = `
<p class="pager">${
    sequence > 0 ? `<a href="/rows/${sequence - 1}">← sequence ${sequence - 1}</a>` : ""
  } <a href="/rows/${sequence + 1}">sequence ${sequence + 1} →</a></p>
<section aria-labelledby="h-fields"><h2 id="h-fields">Row</h2>
<dl class="facts">
${field("Sequence", sequence, "sequence")}
${field("Event id", r.id, "id")}
${field("Event type", r.event_type, "event_type")}
${field("Agent", r.agent_id, "agent_id")}
${field("Timestamp", r.timestamp, "timestamp")}
${field("Appended at (not hashed)", r.appended_at, "appended_at")}
${field("Attest level", r.attest_level, "attest_level")}
${field("Key id", r.key_id, "key_id")}
${field("Signature", r.signature, "signature")}
${field("Payload hash", r.payload_hash, "payload_hash")}
${field("Previous hash", r.prev_hash, "prev_hash")}
${field("Entry hash", r.entry_hash, "entry_hash")}
<dt>Session</dt><dd>${
    Option.match(session, {
      onNone: () => "(none)",
      onSome: ({ entry, sessionId }) =>
        `<a id="session-link" href="/sessions/${encodeURIComponent(sessionId)}${
          Option.match(entry, { onNone: () => "", onSome: (n) => `#entry-${n}` })
        }">${escape(sessionId)}${Option.match(entry, { onNone: () => "", onSome: (n) => `, entry ${n}` })}</a>`
    })
  }</dd>
</dl></section>
<section aria-labelledby="h-payload"><h2 id="h-payload">Payload (decoded)</h2>
<pre class="payload" tabindex="0">${prettyPayload(r.payload)}</pre></section>
<section aria-labelledby="h-receipt"><h2 id="h-receipt">Receipt</h2>
${
    options.receipt.available
      ? `<p><a id="receipt-download" href="/rows/${sequence}/receipt.json" download="receipt-${sequence}.json">Download the receipt</a> (the row, its inclusion proof and the last stored checkpoint). Check it offline: <code>agent-ledger verify-receipt receipt-${sequence}.json --key VKEY</code>.</p>`
      : `<p data-receipt="unavailable">No receipt: ${escape(options.receipt.detail)}</p>`
  }
</section>`
  return page({ title: `Row ${sequence}`, section: "row", ledger: options.ledger, body })
}

export const message = (ledger: string, title: string, text: string): string =>
  page({ title, section: "row", ledger, body: `<p>${escape(text)}</p>` })

/** Sessions listed on one page at most (the list is in order of first appearance). */
export const MAX_SESSIONS_SHOWN = 1000

export const sessions = (options: {
  readonly ledger: string
  readonly sessions: ReadonlyArray<LedgerQuery.SessionSummary>
}): string => {
  const shown = options.sessions.slice(-MAX_SESSIONS_SHOWN).reverse()
  const rows = shown.map((s) =>
    `<tr><td><a href="/sessions/${encodeURIComponent(s.sessionId)}" data-session-link="${escape(s.sessionId)}">${
      escape(s.sessionId)
    }</a></td><td>${escape(s.agentId)}</td><td>${escape(s.start)}</td><td>${
      escape(s.end)
    }</td><td data-figure="sessionCalls">${s.calls}</td><td data-figure="sessionRefusals">${s.refusals}</td><td>${
      s.sealed ? `yes (${s.sealedLength ?? "?"} entries)` : "no"
    }</td></tr>`
  ).join("")
  const body = `<p><span data-figure="sessions">${options.sessions.length}</span> session(s) in the ledger${
    options.sessions.length > shown.length ? `; the latest ${shown.length} shown` : ""
  }, newest first.</p>
${
    rows.length === 0
      ? "<p>No sessions.</p>"
      : `<table class="rows"><thead><tr><th scope="col">Session</th><th scope="col">Agent</th><th scope="col">First seen</th><th scope="col">Last seen</th><th scope="col">Calls</th><th scope="col">Refusals</th><th scope="col">Sealed</th></tr></thead><tbody>${rows}</tbody></table>`
  }`
  return page({ title: "Sessions", section: "sessions", ledger: options.ledger, body })
}

const bytes = (n: number | null) => n === null ? "-" : String(n)

export const session = (options: {
  readonly ledger: string
  readonly detail: LedgerQuery.SessionDetail
}): string => {
  const { detail } = options
  const s = detail.summary
  const entries = detail.entries.map((e) => {
    const id = e.journalSequence === null ? "" : ` id="entry-${e.journalSequence}"`
    return `<tr${id} class="kind-${escape(e.kind)}"><td>${e.journalSequence ?? "-"}</td><td>${
      escape(e.timestamp)
    }</td><td>${escape(e.kind)}</td><td>${
      e.ledgerSequence === null
        ? "-"
        : `<a href="/rows/${e.ledgerSequence}" data-row-link="${e.ledgerSequence}">${e.ledgerSequence}</a>`
    }</td><td>${escape(e.toolName ?? e.action ?? "-")}</td><td>${escape(e.decision ?? "-")}</td><td>${
      escape(e.ruleId ?? "-")
    }</td><td>${bytes(e.bytesRead)}</td><td>${bytes(e.bytesWritten)}</td><td>${
      escape(e.reason ?? e.problem ?? "")
    }</td></tr>`
  }).join("")
  const tools = detail.byTool.map((t) =>
    `<tr><td>${escape(t.toolName)}</td><td>${
      escape(t.serverId)
    }</td><td>${t.calls}</td><td>${t.refusals}</td><td>${t.bytesRead}</td><td>${t.bytesWritten}</td></tr>`
  ).join("")
  const seals = detail.seals.map((seal) =>
    `<li><a href="/rows/${seal.ledgerSequence}">sequence ${seal.ledgerSequence}</a>: ${seal.length} entries sealed, head <code class="hash">${
      escape(seal.headHash)
    }</code> (${escape(seal.timestamp)})</li>`
  ).join("")
  const body = `
<dl class="facts">
<dt>Agent</dt><dd>${escape(s.agentId)}</dd>
<dt>Time</dt><dd>${escape(s.start)} .. ${escape(s.end)}</dd>
<dt>Calls</dt><dd data-figure="calls">${detail.totals.calls}</dd>
<dt>Refusals</dt><dd data-figure="refusals">${detail.totals.refusals}</dd>
<dt>Bytes read / written</dt><dd>${detail.totals.bytesRead} / ${detail.totals.bytesWritten}</dd>
<dt>Journal</dt><dd>${
    detail.journalStored
      ? "stored in the ledger (every call)"
      : "not stored: the ledger has its refusals and seals only"
  }</dd>
</dl>
<section aria-labelledby="h-seals"><h2 id="h-seals">Seals</h2>
${seals.length === 0 ? "<p>Not sealed.</p>" : `<ul>${seals}</ul>`}</section>
<section aria-labelledby="h-tools"><h2 id="h-tools">Data flow by tool</h2>
${
    tools.length === 0
      ? "<p>No tool calls recorded.</p>"
      : `<table class="rows"><thead><tr><th scope="col">Tool</th><th scope="col">Server</th><th scope="col">Calls</th><th scope="col">Refusals</th><th scope="col">Bytes read</th><th scope="col">Bytes written</th></tr></thead><tbody>${tools}</tbody></table>`
  }</section>
<section aria-labelledby="h-timeline"><h2 id="h-timeline">Timeline</h2>
${detail.truncated ? `<p>Only the first ${detail.entries.length} entries are shown.</p>` : ""}
<table class="rows timeline"><thead><tr><th scope="col">Entry</th><th scope="col">Time</th><th scope="col">Kind</th><th scope="col">Ledger row</th><th scope="col">Tool or action</th><th scope="col">Decision</th><th scope="col">Rule</th><th scope="col">Bytes read</th><th scope="col">Bytes written</th><th scope="col">Reason</th></tr></thead><tbody>${entries}</tbody></table>
</section>`
  return page({ title: `Session ${s.sessionId}`, section: "sessions", ledger: options.ledger, body })
}

const descriptionOf = (definition: unknown): string | undefined =>
  typeof definition === "object" && definition !== null && !Array.isArray(definition) &&
    typeof (definition as Record<string, unknown>).description === "string"
    ? (definition as Record<string, string>).description
    : undefined

/**
 * The tool definitions guards pinned (`tool.pinned` rows) and the changes they saw since (`tool.changed`,
 * refused until `agent-ledger tools approve`): what `agent-ledger tools list` prints.
 */
export const tools = (options: {
  readonly ledger: string
  readonly tools: ReadonlyArray<ToolPins.LedgerTool>
}): string => {
  const changed = options.tools.filter((tool) => tool.changes.length > 0).length
  const rows = options.tools.map((tool) => {
    const pin = tool.pinned === undefined
      ? "not pinned"
      : `<code class="hash">${
        escape(tool.pinned.digest.slice(0, 16))
      }</code> (<a href="/rows/${tool.pinned.sequence}" data-row-link="${tool.pinned.sequence}">row ${tool.pinned.sequence}</a>, ${
        escape(tool.pinned.timestamp)
      })`
    const changes = tool.changes.length === 0 ? "none" : `<ul>${
      tool.changes.map((change) => {
        const description = descriptionOf(change.definition)
        return `<li>CHANGED to <code class="hash">${
          escape(change.digest.slice(0, 16))
        }</code> (<a href="/rows/${change.sequence}" data-row-link="${change.sequence}">row ${change.sequence}</a>, ${
          escape(change.timestamp)
        })${description === undefined ? "" : `: ${escape(description.slice(0, 500))}`}</li>`
      }).join("")
    }</ul>`
    return `<tr data-tool="${escape(tool.serverId)}/${escape(tool.toolName)}" data-changed="${
      tool.changes.length > 0
    }"><td>${escape(tool.serverId)}</td><td>${escape(tool.toolName)}</td><td>${pin}</td><td>${changes}</td></tr>`
  }).join("")
  const body =
    `<p><span data-figure="toolsPinned">${options.tools.length}</span> tool(s) pinned, <span data-figure="toolsChanged">${changed}</span> changed since (refused until approved with <code>agent-ledger tools approve</code>). Read, not verified: run “Verify now” on the overview.</p>
${
      rows.length === 0
        ? "<p>No tool pins: the ledger's guards pinned no tool definitions.</p>"
        : `<table class="rows"><thead><tr><th scope="col">Server</th><th scope="col">Tool</th><th scope="col">Pinned definition</th><th scope="col">Changes since</th></tr></thead><tbody>${rows}</tbody></table>`
    }`
  return page({ title: "Tool pins", section: "tools", ledger: options.ledger, body })
}
