// The web UI in headless Chromium (Debian's package, driven by playwright-core;
// no browser download): sign in, start a workflow, watch tokens stream in live,
// survive a gateway restart mid-stream with exactly the right text, send an
// action from the page; start the research example and sign it off. Leaves a screenshot in $TMPDIR/troupe-ui.png (and in
// docs/ui.png with UPDATE_SCREENSHOT=1). Then the review's fixes: a typed send
// type survives events, a token flood grows one capped text node, a hidden tab
// drains on a timer, a gone workflow stops the page, and sign-out only says so
// when it happened, leaving nothing of the user's behind.
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { researchTeam } from '../../examples/research-team/agents.ts'
import { call, sleep, startStack, type Stack } from './helpers.ts'
import { TroupeClient } from '../../runtime/index.ts'
import { eventually } from '../helpers/redis.ts'

const CHROMIUM = '/usr/bin/chromium'
let s: Stack
let ctx: BrowserContext
let page: Page
let profile: string

async function freePort(): Promise<number> {
  const srv = createServer()
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  const addr = srv.address()
  await new Promise<void>((r) => srv.close(() => r()))
  if (!addr || typeof addr !== 'object') throw new Error('no port')
  return addr.port
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) throw new Error('install chromium: apt-get install -y chromium')
  // A fixed port, so the page can reconnect to the restarted gateway.
  s = await startStack({ agents: researchTeam, gateway: { port: await freePort(), sse: { retryMs: 300 }, limits: { ratePerSec: 1000, burst: 1000 } } })
  profile = mkdtempSync(join(tmpdir(), 'troupe-chromium-'))
  ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 820 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
  page = ctx.pages()[0] ?? (await ctx.newPage())
  page.on('pageerror', (err) => console.error('page error:', err.message))
  // A stream refused (not 200) is what stalls a page's live view: say so when it happens.
  page.on('response', (r) => {
    if (r.url().includes('/events') && r.status() !== 200) console.info(`browser: ${r.status()} for ${r.url()}`)
  })
})

afterAll(async () => {
  await ctx?.close()
  if (profile) rmSync(profile, { recursive: true, force: true })
  await s?.stop()
})

/** Number of token stream rows in the timeline. */
async function streamRows(): Promise<number> {
  return page.locator('#d-timeline .c.stream').count()
}

/** Text of the token stream row after the first `skip` ones ('' until it exists). */
async function streamText(skip: number): Promise<string> {
  const rows = page.locator('#d-timeline .c.stream')
  return (await rows.count()) > skip ? ((await rows.nth(skip).textContent()) ?? '') : ''
}

/** Starts a workflow from the page's form (counter relays `text` to echo, which streams it) and waits until its stream is live. */
async function startRelay(text: string): Promise<void> {
  await page.click('#new-workflow')
  await page.waitForSelector('#start-view:not([hidden])')
  await page.selectOption('#start-agent', 'counter')
  await page.fill('#start-type', 'relay')
  await page.fill('#start-payload', JSON.stringify({ text }))
  await page.click('#start-form button[type=submit]')
  await page.waitForSelector('#detail-view:not([hidden])')
  await page.waitForSelector('#d-conn.live')
}

/** Polls the new stream row's text until it equals `want`, running `during` once a quarter of it shows. */
async function watchStream(want: string, skip: number, during?: () => Promise<void>): Promise<void> {
  let side: Promise<void> | undefined
  const deadline = Date.now() + 30_000
  for (;;) {
    const t = await streamText(skip)
    if (!side && during && t.length > want.length / 4) side = during()
    if (t === want) break
    // Past the expected text means duplicates: fail fast with what we saw.
    if (t.length > want.length || Date.now() > deadline) throw new Error(`stream text ${JSON.stringify(t.slice(0, 80))}… (${t.length} chars), want ${want.length}`)
    await sleep(15)
  }
  await side
}

/**
 * Has the page record the first stream row's length at each DOM update it makes;
 * {@link recordedLengths} returns them and stops recording. Sampling the row from
 * here instead (a round trip per sample) saw too few updates on a loaded machine:
 * the text can finish streaming between two samples.
 */
async function recordStreamLengths(): Promise<void> {
  await page.evaluate(`(() => {
    const seen = (window.__streamLengths = [])
    window.__streamObserver = new MutationObserver(() => {
      const c = document.querySelector('#d-timeline .c.stream')
      if (c && seen.at(-1) !== c.textContent.length) seen.push(c.textContent.length)
    })
    window.__streamObserver.observe(document.getElementById('d-timeline'), { childList: true, subtree: true, characterData: true })
  })()`)
}

async function recordedLengths(): Promise<number[]> {
  return await page.evaluate<number[]>('(() => { window.__streamObserver.disconnect(); return window.__streamLengths })()')
}

describe('web UI in headless Chromium', () => {
  it('signs in, starts a workflow, streams tokens live across a gateway restart, sends an action', async () => {
    const credential = await s.issue('ana')
    await page.goto(s.url)
    await page.waitForSelector('#signin-form', { state: 'visible' })
    await page.fill('#credential', 'tcr.ana.wrong')
    await page.click('#signin-form button[type=submit]')
    await page.waitForSelector('#signin-error:not([hidden])')
    await page.fill('#credential', credential)
    await page.click('#signin-form button[type=submit]')
    await page.waitForSelector('#app:not([hidden])')
    expect(await page.textContent('#user-name')).toBe('ana')
    // The session cookie is HttpOnly (invisible to page scripts) and SameSite=Strict.
    expect(await page.evaluate(() => (globalThis as unknown as { document: { cookie: string } }).document.cookie)).toBe('')
    const cookie = (await ctx.cookies()).find((c) => c.name === 'troupe_session')
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict' })

    // Start a workflow from the form: counter relays the text to echo, which streams it.
    const text = 'Troupe streams every token to the browser as it happens. '.repeat(4)
    await recordStreamLengths()
    await startRelay(text)
    await watchStream(text, 0)
    // Tokens arrived over time, not all at once: the UI renders once per animation
    // frame, so three or more lengths short of the whole text mean it grew on screen
    // over several frames.
    const seen = await recordedLengths()
    console.info(`browser: the stream row showed ${seen.length} lengths on the way to ${text.length} characters`)
    expect(seen.filter((n) => n > 0 && n < text.length).length).toBeGreaterThanOrEqual(3)
    expect(seen).toEqual([...seen].sort((a, b) => a - b))
    // (The page's CSP forbids eval, so waits use selectors rather than waitForFunction strings.)
    await page.waitForSelector('#d-agents :text-is("echo")')
    const wfId = (await page.textContent('#d-id')) ?? ''
    expect(await page.textContent('#wf-list')).toContain(wfId)

    // Send another relay from the page and restart the gateway while it streams:
    // EventSource reconnects with Last-Event-ID and the text comes out exact.
    const second = 'After a restart the stream resumes exactly where it stopped, no gap, no repeat. '.repeat(6)
    await page.selectOption('#send-agent', 'counter')
    await page.fill('#send-type', 'relay')
    await page.fill('#send-payload', JSON.stringify({ text: second }))
    const svc = s.service
    let restartedAt = 0
    const before = await streamRows()
    await page.click('#send-form button[type=submit]')
    await page.waitForSelector('#toast:has-text("Sent relay")')
    let shownAtStop = -1
    await watchStream(second, before, async () => {
      await svc.stop()
      shownAtStop = (await streamText(before)).length
      await sleep(200)
      await svc.start(s.rt)
      restartedAt = Date.now()
    })
    expect(restartedAt).toBeGreaterThan(0)
    // The gateway went away with the text half shown; the rest came through the new one.
    expect(shownAtStop).toBeGreaterThan(0)
    expect(shownAtStop).toBeLessThan(second.length)
    console.info(`browser: gateway restarted with ${shownAtStop}/${second.length} characters shown; the rest arrived after reconnecting`)
    await page.waitForSelector('#d-conn.live')

    // Let the debounced status refresh land so the picture shows settled counts.
    await page.waitForSelector('#d-agents li:has-text("echo") .state:text-is("idle")')
    await sleep(1300)
    // docs/ui.png is refreshed on request (or when missing) so that test runs do
    // not dirty the work tree; every run leaves its picture in the temp dir.
    const shot = join(tmpdir(), 'troupe-ui.png')
    await page.screenshot({ path: shot })
    const docShot = new URL('../../docs/ui.png', import.meta.url).pathname
    if (process.env.UPDATE_SCREENSHOT === '1' || !existsSync(docShot)) {
      mkdirSync(new URL('../../docs/', import.meta.url), { recursive: true })
      copyFileSync(shot, docShot)
    }

    // Finish it from the page: the status turns completed and the stream ends.
    await page.fill('#send-type', 'finish')
    await page.fill('#send-payload', '{}')
    await page.click('#send-form button[type=submit]')
    await page.waitForSelector('#d-status:text-is("completed")', { timeout: 15_000 })
    await page.waitForSelector('#d-conn.ended')
    const types = await page.locator('#d-timeline .ty').allTextContents()
    expect(types).toContain('workflow.completed')
    expect(types.filter((t) => t === 'workflow.started')).toHaveLength(1)
  })

  it('starts the research example and signs it off from the page', async () => {
    // Still signed in from the test above.
    await page.click('#new-workflow')
    await page.waitForSelector('#example-card:not([hidden])')
    await page.fill('#example-topic', 'tidal power')
    await recordStreamLengths()
    await page.click('#start-example')
    await page.waitForSelector('#detail-view:not([hidden])')
    await page.waitForSelector('#d-conn.live')
    const wfId = (await page.textContent('#d-id')) ?? ''
    // The writer's draft streams in token by token while the page watches.
    await page.waitForSelector('#d-timeline .c.stream')
    await page.waitForSelector('#d-agents li:has-text("reviewer") .state:text-is("awaitingSignOff")', { timeout: 30_000 })
    // The UI renders once per animation frame: three or more distinct lengths mean
    // the draft grew on screen over several frames, not in one block at the end.
    const lengths = await recordedLengths()
    expect(new Set(lengths).size).toBeGreaterThanOrEqual(3)
    expect(lengths).toEqual([...lengths].sort((a, b) => a - b))
    // The reviewer's transition and the workflow's status change come from one commit
    // but arrive as two events; the check can land between them, so it waits.
    await page.waitForSelector('#d-status:text-is("waiting")', { timeout: 5_000 })
    // The page set the send form up for the sign-off.
    expect(await page.inputValue('#send-agent')).toBe('reviewer')
    expect(await page.inputValue('#send-type')).toBe('approve')
    await page.click('#send-form button[type=submit]')
    await page.waitForSelector('#toast:has-text("Sent approve to reviewer")')
    await page.waitForSelector('#d-status:text-is("completed")', { timeout: 15_000 })
    await page.waitForSelector('#d-conn.ended')
    const types = await page.locator('#d-timeline .ty').allTextContents()
    expect(types).toContain('sign-off')
    expect(types.at(-1)).toBe('workflow.completed')
    expect(await page.textContent('#wf-list')).toContain(wfId)
    expect(await page.isHidden('#dead-card')).toBe(true)
  })

  it('opens a new stream from the last event shown when a reconnect is refused', async () => {
    // EventSource gives up for good on any answer but a stream (a gateway that is
    // not ready, a proxy's 502): the page must open a new one after what it showed.
    let refuseNext = false
    let refused = 0
    const events = '**/v1/workflows/*/events*'
    await page.route(events, async (route) => {
      if (!refuseNext) return route.continue()
      refuseNext = false
      refused++
      await route.fulfill({ status: 503, contentType: 'application/problem+json', body: '{"title":"Service Unavailable","status":503}' })
    })
    try {
      const text = 'A refused reconnect is followed by a new stream that starts after the last event shown. '.repeat(5)
      await startRelay(text)
      const svc = s.service
      await watchStream(text, 0, async () => {
        refuseNext = true
        await svc.stop()
        await sleep(200)
        await svc.start(s.rt)
      })
      expect(refused).toBe(1)
      await page.waitForSelector('#d-conn.live')
    } finally {
      await page.unroute(events)
    }
  })
  it('shows the rest of the timeline when the workflow ended while reconnects were refused', async () => {
    // Refused until the workflow is over, then twice more: the page learns it
    // ended from the status, and must still fetch the events after the last one
    // shown, also when that fetch is refused too (a refusal is not the 204 that
    // says nothing is left; EventSource shows both the same way).
    const client = TroupeClient.connect(s.cfg)
    let refusing = false
    let ended = false
    let refusedAfterEnd = 0
    const events = '**/v1/workflows/*/events*'
    await page.route(events, async (route) => {
      if (!refusing || (ended && refusedAfterEnd > 1)) return route.continue()
      if (ended) refusedAfterEnd++
      await route.fulfill({ status: 503, contentType: 'application/problem+json', body: '{"title":"Service Unavailable","status":503}' })
    })
    try {
      const text = 'The end of a workflow shows even when its stream was refused on the way. '.repeat(5)
      await startRelay(text)
      const wf = (await page.textContent('#d-id')) ?? ''
      const deadline = Date.now() + 30_000
      while ((await streamText(0)).length < text.length / 4 && Date.now() < deadline) await sleep(15)
      refusing = true
      await s.service.stop()
      await sleep(200)
      await s.service.start(s.rt)
      // Echo streams to its end first: tokens emitted after the workflow ended are not kept.
      await eventually(async () => (await client.readEvents(wf, '0', 10_000)).some((e) => e.event.type === 'echoed'), 15_000, 'echo done')
      await client.sendAction(wf, 'counter', 'finish')
      await eventually(async () => (await client.getStatus(wf))?.status === 'completed', 15_000, 'completed')
      ended = true
      await page.waitForSelector('#d-conn.ended', { timeout: 20_000 })
      expect(refusedAfterEnd).toBe(2)
      expect(await streamText(0)).toBe(text)
      const types = await page.locator('#d-timeline .ty').allTextContents()
      expect(types.at(-1)).toBe('workflow.completed')
      expect(types.filter((t) => t === 'workflow.completed')).toHaveLength(1)
    } finally {
      await page.unroute(events)
      await client.close()
    }
  })
})

// ---------- review fixes: sign-out, the timeline under load, forms ----------

/** A bearer token of the page's user (started in the first test), to act beside the page. */
async function anaToken(): Promise<string> {
  return (await s.login('ana')).access_token
}

/** Starts a workflow of ana's through the API; returns its id. */
async function startAs(token: string, agent: string, type: string, payload: unknown = {}): Promise<string> {
  const r = await call(s, 'POST', '/v1/workflows', { token, body: { agent, type, payload } })
  if (r.status !== 201) throw new Error(`start: ${r.status} ${r.text}`)
  return (r.json as { workflowId: string }).workflowId
}

/** Opens a workflow in the (signed-in) page through its URL's hash. */
async function openInPage(p: Page, wf: string): Promise<void> {
  await p.evaluate(`location.hash = ${JSON.stringify(wf)}`)
  await p.waitForSelector(`#d-id:text-is("${wf}")`)
  await p.waitForSelector('#detail-view:not([hidden])')
}

interface FakeEvent {
  type: string
  content?: unknown
  actionId?: string
  agent?: string
}

/** An event stream body as the gateway writes it: the events, then `end` when given. */
function sseBody(events: FakeEvent[], end?: string): string {
  const t = Date.now()
  const parts = ['retry: 600000\n\n']
  events.forEach((e, i) => {
    const id = `${t}-${i}`
    const event = { type: e.type, content: e.content ?? null, metadata: { agent: e.agent ?? 'spew', actionId: e.actionId ?? 'a1', at: t } }
    parts.push(`id: ${id}\ndata: ${JSON.stringify({ streamId: id, event })}\n\n`)
  })
  if (end) parts.push(`event: end\ndata: ${JSON.stringify({ status: end })}\n\n`)
  return parts.join('')
}

/** What one token row holds: its child nodes (`#text` or a class name), its text's length, the cut-off marker. */
interface RowShape {
  nodes: string[]
  textLength: number
  cut: string | null
  streaming: boolean
}

const ROW_SHAPES = `[...document.querySelectorAll('#d-timeline .c.stream')].map((c) => ({
  nodes: [...c.childNodes].map((n) => (n.nodeType === 3 ? '#text' : n.className)),
  textLength: c.firstChild && c.firstChild.nodeType === 3 ? c.firstChild.data.length : -1,
  cut: c.querySelector('.cut') ? c.querySelector('.cut').textContent : null,
  streaming: c.parentElement.classList.contains('streaming'),
}))`

/** The characters a row's marker says it left out. */
function leftOut(shape: RowShape): number {
  const m = /… (\d+) more characters not shown/.exec(shape.cut ?? '')
  return m ? Number(m[1]) : 0
}

// The cap of one token row's text (live.js MAX_STREAM_CHARS) and of the timeline's rows (MAX_ROWS).
const ROW_CHARS = 100_000
const MAX_ROWS = 1500

describe('web UI: review fixes', () => {
  it('never overwrites what the user typed in the send form when events arrive', async () => {
    const token = await anaToken()
    const wf = await startAs(token, 'counter', 'ping')
    await openInPage(page, wf)
    await page.waitForSelector('#d-conn.live')
    await page.selectOption('#send-agent', 'counter')
    // The user is still typing `finish`: not one of counter's types (yet).
    await page.fill('#send-type', 'fin')
    const completed = () => page.locator('#d-timeline .ty:text-is("action.completed")').count()
    const before = await completed()
    // Something happens in the workflow meanwhile (another tab, an agent, a timer).
    for (let i = 0; i < 2; i++) expect((await call(s, 'POST', `/v1/workflows/${wf}/actions`, { token, body: { agent: 'counter', type: 'ping' } })).status).toBe(202)
    await eventually(async () => (await completed()) >= before + 2, 10_000, 'the pings shown')
    // The debounced status refresh renders the status once more.
    await sleep(1300)
    expect(await page.inputValue('#send-type')).toBe('fin')
    // Picking another agent keeps a typed value too; an emptied field is filled with the pick's first type.
    await page.selectOption('#send-agent', 'echo')
    expect(await page.inputValue('#send-type')).toBe('fin')
    await page.fill('#send-type', '')
    await page.selectOption('#send-agent', 'counter')
    const first = await page.inputValue('#send-type')
    expect(await page.locator('#send-types option').evaluateAll((os) => os.map((o) => (o as unknown as { value: string }).value))).toContain(first)
    expect(first).not.toBe('')
  })

  it('grows a streaming row by appends to one text node, capped, however many tokens come at once', async () => {
    const token = await anaToken()
    const wf = await startAs(token, 'counter', 'ping')
    // 25,000 tokens of two actions, interleaved and delivered in one burst: 150,000
    // characters for a1 (past the cap), 5,000 for a2.
    const events: FakeEvent[] = [{ type: 'action.enqueued', content: { agent: 'spew', type: 'spew' } }]
    for (let i = 0; i < 25_000; i++) {
      events.push({ type: 'token', content: 'abcde ' })
      if (i % 30 === 0) events.push({ type: 'token', content: 'xy', actionId: 'a2' })
    }
    events.push({ type: 'action.completed', content: { agent: 'spew' } }, { type: 'action.completed', content: { agent: 'spew' }, actionId: 'a2' })
    const route = `**/v1/workflows/${wf}/events*`
    await page.route(route, (r) => r.fulfill({ status: 200, contentType: 'text/event-stream', body: sseBody(events, 'running') }))
    try {
      // Counts the DOM changes the flood causes (one per token would be O(n²) work).
      await page.evaluate(`(() => {
        window.__mutations = 0
        window.__timelineObserver = new MutationObserver((records) => { window.__mutations += records.length })
        window.__timelineObserver.observe(document.getElementById('d-timeline'), { childList: true, subtree: true, characterData: true })
      })()`)
      await openInPage(page, wf)
      await page.waitForSelector('#d-conn.ended', { timeout: 60_000 })
      await page.waitForSelector('#d-timeline .ty:text-is("action.completed")')
      const mutations = await page.evaluate<number>('(() => { window.__timelineObserver.disconnect(); return window.__mutations })()')
      const [a1, a2] = await page.evaluate<RowShape[]>(ROW_SHAPES)
      console.info(`browser: 25,000 tokens made ${mutations} timeline mutations; rows ${JSON.stringify([a1?.nodes, a2?.nodes])}`)
      // One text node each (plus, past the cap, the marker saying how much is left out).
      expect(a1).toMatchObject({ nodes: ['#text', 'cut'], textLength: ROW_CHARS, streaming: false })
      expect(leftOut(a1 as RowShape)).toBe(150_000 - ROW_CHARS)
      expect(a2).toMatchObject({ nodes: ['#text'], textLength: 2 * Math.ceil(25_000 / 30), cut: null, streaming: false })
      expect(mutations).toBeLessThan(200)
    } finally {
      await page.unroute(route)
    }
  })

  it('keeps the timeline current and bounded on a timer while the tab is hidden', async () => {
    const token = await anaToken()
    const wf = await startAs(token, 'counter', 'ping')
    // 4,000 rows (more than the timeline keeps), then a stream of 120,000 characters.
    const events: FakeEvent[] = []
    for (let i = 0; i < 4000; i++) events.push({ type: 'note', content: { i }, actionId: `n${i}` })
    for (let i = 0; i < 20_000; i++) events.push({ type: 'token', content: 'hidden', actionId: 't1' })
    const p2 = await ctx.newPage()
    // A background tab: hidden, and no animation frames ever (what Chrome does).
    await p2.addInitScript(`(() => {
      Object.defineProperty(document, 'hidden', { get: () => true, configurable: true })
      Object.defineProperty(document, 'visibilityState', { get: () => 'hidden', configurable: true })
      window.__framesAsked = 0
      window.requestAnimationFrame = () => { window.__framesAsked++; return 0 }
    })()`)
    p2.on('pageerror', (err) => console.error('page error:', err.message))
    await p2.route(`**/v1/workflows/${wf}/events*`, (r) => r.fulfill({ status: 200, contentType: 'text/event-stream', body: sseBody(events, 'running') }))
    try {
      await p2.goto(`${s.url}/#${wf}`)
      await p2.waitForSelector(`#d-id:text-is("${wf}")`)
      await p2.waitForSelector('#d-conn.ended')
      // Shown while hidden, as merged rows: the newest MAX_ROWS, the stream one text node, capped.
      await p2.waitForSelector('#d-timeline .c.stream', { timeout: 15_000 })
      expect(await p2.evaluate<boolean>('document.hidden')).toBe(true)
      const rows = await p2.locator('#d-timeline > li').count()
      expect(rows).toBe(MAX_ROWS)
      const [stream] = await p2.evaluate<RowShape[]>(ROW_SHAPES)
      expect(stream).toMatchObject({ nodes: ['#text', 'cut'], textLength: ROW_CHARS })
      expect(leftOut(stream as RowShape)).toBe(120_000 - ROW_CHARS)
      // The oldest rows kept are the newest notes before the stream.
      expect(await p2.locator('#d-timeline > li').first().locator('.c').textContent()).toBe(JSON.stringify({ i: 4000 - MAX_ROWS + 1 }))
    } finally {
      await p2.close()
    }
  })

  it('stops and says so when the workflow is gone', async () => {
    const token = await anaToken()
    const wf = await startAs(token, 'counter', 'ping')
    // The workflow is deleted (or expired) while the page follows it: its
    // stream and status answer 404 from the first reconnect on.
    let statusReads = 0
    let streamAsks = 0
    const gone = { status: 404, contentType: 'application/problem+json', body: JSON.stringify({ title: 'Workflow not found', status: 404, code: 'workflow_not_found' }) }
    await page.route(`**/v1/workflows/${wf}/events*`, async (r) => {
      streamAsks++
      await r.fulfill(gone)
    })
    await page.route(`**/v1/workflows/${wf}`, async (r) => {
      if (statusReads++ === 0) return r.continue()
      await r.fulfill(gone)
    })
    try {
      await openInPage(page, wf)
      await page.waitForSelector('#d-conn-text:text-is("no longer available")', { timeout: 15_000 })
      expect(await page.getAttribute('#d-conn', 'class')).toContain('ended')
      const asked = streamAsks
      // Nothing more is asked: no retry loop (the old page asked again and again, forever).
      await sleep(2500)
      expect(streamAsks).toBe(asked)
      expect(await page.textContent('#d-conn-text')).toBe('no longer available')
    } finally {
      await page.unroute(`**/v1/workflows/${wf}/events*`)
      await page.unroute(`**/v1/workflows/${wf}`)
    }
  })

  it('says that sign-out failed when it did, and stays signed in', async () => {
    await page.route('**/v1/auth/logout', (r) => r.abort('connectionfailed'))
    try {
      await page.click('#sign-out')
      await page.waitForSelector('#toast.bad:has-text("Sign-out failed")')
      expect(await page.isVisible('#app')).toBe(true)
      expect(await page.isHidden('#signin')).toBe(true)
      expect((await ctx.cookies()).some((c) => c.name === 'troupe_session')).toBe(true)
    } finally {
      await page.unroute('**/v1/auth/logout')
    }
    // A refusal (a proxy's 503, say) is a failure too.
    await page.route('**/v1/auth/logout', (r) => r.fulfill({ status: 503, contentType: 'application/problem+json', body: JSON.stringify({ title: 'Service unavailable', status: 503, detail: 'upstream down' }) }))
    try {
      await page.click('#sign-out')
      await page.waitForSelector('#toast.bad:has-text("upstream down")')
      expect(await page.isVisible('#app')).toBe(true)
      expect(await page.textContent('#user-name')).toBe('ana')
    } finally {
      await page.unroute('**/v1/auth/logout')
    }
  })

  it("signs out leaving nothing of the user's in the page, late answers included", async () => {
    const token = await anaToken()
    // A workflow with a dead letter, open in the page, and a half-filled send form.
    const wf = await startAs(token, 'fragile', 'explode')
    await openInPage(page, wf)
    await page.waitForSelector('#dead-card:not([hidden])', { timeout: 15_000 })
    await page.fill('#send-type', 'calm')
    await page.fill('#send-payload', '{"secret": 1}')
    expect(await page.locator('#wf-list li').count()).toBeGreaterThan(0)
    expect(await page.locator('#d-timeline li').count()).toBeGreaterThan(0)
    // A list refresh under way when the user signs out, answered only afterwards.
    let held: (() => Promise<void>) | null = null
    const list = '**/v1/workflows?limit=30'
    await page.route(list, (r) => {
      held = () => r.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ items: [{ workflowId: 'late-answer', status: 'running', entry: 'counter', createdAt: Date.now(), updatedAt: Date.now() }], nextCursor: null }) })
    })
    try {
      await eventually(() => Promise.resolve(held !== null), 10_000, 'the periodic list refresh')
      await page.click('#sign-out')
      await page.waitForSelector('#signin:not([hidden])')
      expect(await page.textContent('#signin-error')).toBe('Signed out.')
      await (held as unknown as () => Promise<void>)()
      await sleep(300)
    } finally {
      await page.unroute(list)
    }
    const left = await page.evaluate<Record<string, unknown>>(`(() => {
      const n = (sel) => document.querySelectorAll(sel).length
      const v = (id) => document.getElementById(id).value
      const t = (id) => document.getElementById(id).textContent
      return {
        list: n('#wf-list li'), timeline: n('#d-timeline li'), agents: n('#d-agents li'), counts: n('#d-counts div'), dead: n('#d-dead li'),
        deadCard: document.getElementById('dead-card').hidden, detail: document.getElementById('detail-view').hidden,
        id: t('d-id'), meta: t('d-meta'), user: t('user-name'), sendAgents: n('#send-agent option'), startAgents: n('#start-agent option'),
        sendType: v('send-type'), sendPayload: v('send-payload'), hash: location.hash,
      }
    })()`)
    expect(left).toEqual({
      list: 0, timeline: 0, agents: 0, counts: 0, dead: 0, deadCard: true, detail: true,
      id: '', meta: '', user: '', sendAgents: 0, startAgents: 0, sendType: '', sendPayload: '{}', hash: '',
    })
    expect(await page.textContent('#signin-error')).toBe('Signed out.')
    expect((await ctx.cookies()).some((c) => c.name === 'troupe_session')).toBe(false)
    // A reload does not sign back in.
    await page.reload()
    await page.waitForSelector('#signin:not([hidden])')
    expect(await page.isHidden('#app')).toBe(true)
  })
})
