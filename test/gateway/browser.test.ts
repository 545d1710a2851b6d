// The web UI in headless Chromium (Debian's package, driven by playwright-core;
// no browser download): sign in, start a workflow, watch tokens stream in live,
// survive a gateway restart mid-stream with exactly the right text, send an
// action from the page; start the research example and sign it off. Leaves a screenshot in $TMPDIR/troupe-ui.png (and in
// docs/ui.png with UPDATE_SCREENSHOT=1).
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { researchTeam } from '../../examples/research-team/agents.ts'
import { sleep, startStack, type Stack } from './helpers.ts'
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
