// The live timeline: follows one workflow over EventSource (which reconnects by
// itself with Last-Event-ID) and shows it in batches. Events are merged as they
// arrive, before any DOM work: the tokens of one action into one string (at most
// MAX_STREAM_CHARS of it), and at most MAX_ROWS rows are kept waiting, so the
// work waiting for the screen stays bounded however fast events come and however
// long the tab stays in the background. It reaches the screen once per animation
// frame, or on a timer while the tab is hidden (browsers run no animation frames
// in background tabs): each frame adds each streaming row's new text in one
// append to its one text node.
import { clock, el, summary, typeClass } from './format.js'

const MAX_ROWS = 1500
/** Characters of streamed text one row shows; past them it only counts what it leaves out. */
const MAX_STREAM_CHARS = 100_000
/** How often a hidden tab puts what arrived on screen (background timers may run later still). */
const HIDDEN_FLUSH_MS = 1000
const $ = (id) => document.getElementById(id)

/**
 * Creates the follower. `hooks.event(ev)` sees every non-token event as it
 * arrives (to update state only: no rendering), `hooks.shown()` is called once
 * the events seen since the last call are on screen (to render that state),
 * `hooks.reset(status)` gets a trimmed history's status, `hooks.end(status)` the
 * end, `hooks.open()` each (re)connect, `hooks.over(wf)` is asked, when the
 * browser gave a stream up, whether the workflow is over, and `hooks.gone(status)`
 * hears that the workflow is no longer available (404, or 401: not to this session).
 */
export function createLive(hooks) {
  let source = null
  // Waiting for the screen: rows in order (token rows and event items), token rows
  // already shown that grew, and whether the timeline is to start over (reset).
  let queue = []
  const grown = new Set()
  let restart = false
  let eventsSeen = false
  let frame = 0
  let timer = null
  // Open token rows by `actionId:agent`.
  const streams = new Map()
  // The stream id of the last event shown, and the wait before reopening a stream
  // the browser gave up (doubles up to 10 s, back to 0 once a stream opens).
  let lastId = ''
  let backoff = 0
  let retryTimer = null

  function setConn(kind, text) {
    $('d-conn').className = `conn ${kind}`
    $('d-conn-text').textContent = text
  }

  function dropQueue() {
    for (const item of queue) item.dropped = true
    queue = []
    grown.clear()
  }

  function closeStream() {
    clearTimeout(retryTimer)
    if (source) source.close()
    source = null
    dropQueue()
    restart = false
    eventsSeen = false
    lastId = ''
    backoff = 0
  }

  // `last`: the workflow is over and this stream only fetches what came after the
  // last event shown (the server replays it and ends, or answers 204).
  const eventsUrl = (wf, after) => `/v1/workflows/${encodeURIComponent(wf)}/events${after ? `?after=${encodeURIComponent(after)}` : ''}`

  function openStream(wf, after = '', last = false) {
    clearTimeout(retryTimer)
    setConn('', 'connecting')
    const es = new EventSource(eventsUrl(wf, after))
    source = es
    es.onopen = () => {
      backoff = 0
      setConn('live', 'live')
      hooks.open()
    }
    es.onerror = () => {
      if (source !== es) return
      if (es.readyState !== EventSource.CLOSED) {
        setConn('retrying', 'reconnecting…')
        return
      }
      // The browser stops reconnecting on any answer but a stream: a 204 once the
      // workflow is over, but also an error status from a gateway that is starting
      // or behind a proxy that lost it. Only the first means the end: otherwise
      // open a new stream after the last event shown (EventSource's own retries
      // send that id as Last-Event-ID; a new one takes it as ?after=).
      setConn('retrying', 'reconnecting…')
      const again = (lastOne) => {
        backoff = Math.min(backoff ? backoff * 2 : 500, 10_000)
        retryTimer = setTimeout(() => {
          if (source === es) openStream(wf, lastId, lastOne)
        }, backoff)
      }
      if (last) {
        // EventSource cannot tell a 204 (nothing after the last event shown: the
        // story is complete) from a refusal (a gateway restarting): ask once more
        // and look at the status. A 204 ends it; so do a 404 (the workflow is gone:
        // expired or deleted) and a 401 (not this session's to see any more), which
        // no retry changes. Anything else: fetch the rest later.
        void fetch(eventsUrl(wf, lastId), { credentials: 'same-origin' }).then(
          (res) => {
            void res.body?.cancel()
            return res.status
          },
          () => 0,
        ).then((status) => {
          if (source !== es) return
          if (status === 204) setConn('ended', 'ended')
          else if (status === 404 || status === 401) {
            setConn('ended', 'no longer available')
            hooks.gone(status)
          } else again(true)
        })
        return
      }
      void Promise.resolve(hooks.over(wf)).then((over) => {
        if (source !== es) return
        if (over) {
          // It ended while we were away: the events after the last one shown
          // (its end included) are still to be shown, once.
          openStream(wf, lastId, true)
          return
        }
        again(false)
      })
    }
    es.onmessage = (m) => {
      if (source !== es) return
      if (m.lastEventId) lastId = m.lastEventId
      let item
      try {
        item = JSON.parse(m.data)
      } catch {
        return
      }
      take(item)
      scheduleFlush()
    }
    es.addEventListener('reset', (m) => {
      if (source !== es) return
      const data = JSON.parse(m.data)
      // What still waits is older than the trim: the timeline starts over.
      dropQueue()
      streams.clear()
      restart = true
      scheduleFlush()
      if (data.status) hooks.reset(data.status)
    })
    es.addEventListener('end', (m) => {
      if (source !== es) return
      es.close()
      const { status } = JSON.parse(m.data)
      setConn('ended', `ended (${status})`)
      hooks.end(status)
    })
  }

  // ---------- arrival: merge, no DOM work ----------

  function push(item) {
    queue.push(item)
    // Only the newest MAX_ROWS rows would stay on screen: drop the rest now
    // (in bulk, so that each arrival costs O(1) on average).
    if (queue.length > 2 * MAX_ROWS) for (const old of queue.splice(0, queue.length - MAX_ROWS)) old.dropped = true
  }

  function take({ streamId, event: ev }) {
    const agent = ev.metadata?.agent ?? ''
    const at = ev.metadata?.at ?? Number(String(streamId).split('-')[0])
    if (ev.type === 'token') {
      const key = `${ev.metadata?.actionId ?? ''}:${agent}`
      let row = streams.get(key)
      // A row trimmed from the screen (or dropped before it got there) is not
      // grown any more: the tokens after it start a new one.
      if (!row || row.dropped || (row.li && !row.li.isConnected)) {
        row = { at, agent, li: null, node: null, cut: null, shown: 0, text: '', more: 0, open: true, dropped: false }
        streams.set(key, row)
        push(row)
      } else if (row.li) grown.add(row)
      addText(row, typeof ev.content === 'string' ? ev.content : JSON.stringify(ev.content))
      return
    }
    // Any other event of the same action closes that action's token stream.
    const prefix = `${ev.metadata?.actionId ?? '-'}:`
    for (const [key, row] of streams) {
      if (key.startsWith(prefix)) {
        row.open = false
        streams.delete(key)
        if (row.li) grown.add(row)
      }
    }
    push({ at, agent, ev, dropped: false })
    eventsSeen = true
    hooks.event(ev)
  }

  /** Adds text to a token row, up to MAX_STREAM_CHARS shown; the rest is only counted. */
  function addText(row, s) {
    let room = MAX_STREAM_CHARS - row.shown - row.text.length
    if (s.length <= room) {
      row.text += s
      return
    }
    if (room > 0) {
      // Never cut a surrogate pair in two.
      const code = s.charCodeAt(room - 1)
      if (code >= 0xd800 && code <= 0xdbff) room--
      row.text += s.slice(0, room)
    }
    row.more += s.length - Math.max(room, 0)
  }

  // ---------- the screen ----------

  function scheduleFlush() {
    if (frame || timer) return
    // Animation frames pace a visible tab; a hidden one runs none, so a timer
    // backs the frame up (and does the work alone while hidden).
    if (!document.hidden) frame = requestAnimationFrame(flush) || -1
    timer = setTimeout(flush, HIDDEN_FLUSH_MS)
  }

  // Shown again: what waits is put on screen at the next frame, not the timer's.
  document.addEventListener('visibilitychange', () => {
    if (document.hidden || !timer) return
    clearTimeout(timer)
    cancelAnimationFrame(frame)
    frame = 0
    timer = null
    scheduleFlush()
  })

  function flush() {
    cancelAnimationFrame(frame)
    clearTimeout(timer)
    frame = 0
    timer = null
    const ol = $('d-timeline')
    const stick = $('d-follow').checked
    if (restart) {
      restart = false
      ol.replaceChildren(el('li', 'note', 'Earlier events were trimmed from the stream; the status below is current.'))
    }
    for (const row of grown) paint(row)
    grown.clear()
    const items = queue
    queue = []
    const from = Math.max(0, items.length - MAX_ROWS)
    for (let i = 0; i < from; i++) items[i].dropped = true
    if (from < items.length) {
      const rows = document.createDocumentFragment()
      for (let i = from; i < items.length; i++) {
        const item = items[i]
        rows.append(item.ev ? eventRow(item.at, item.ev.type, item.agent, summary(item.ev)) : tokenRow(item))
      }
      ol.append(rows)
      for (let n = ol.children.length - MAX_ROWS; n > 0; n--) ol.firstElementChild.remove()
    }
    if (stick) ol.scrollTop = ol.scrollHeight
    if (eventsSeen) {
      eventsSeen = false
      hooks.shown()
    }
  }

  function tokenRow(row) {
    const li = eventRow(row.at, 'token', row.agent, '')
    const c = li.querySelector('.c')
    c.classList.add('stream')
    row.node = document.createTextNode('')
    c.append(row.node)
    row.li = li
    paint(row)
    return li
  }

  /** Puts a token row's new text on screen: one append to its one text node. */
  function paint(row) {
    if (row.text) {
      row.node.appendData(row.text)
      row.shown += row.text.length
      row.text = ''
    }
    if (row.more > 0) {
      if (!row.cut) {
        row.cut = el('span', 'cut')
        row.node.parentNode.append(row.cut)
      }
      row.cut.textContent = ` … ${row.more} more characters not shown`
    }
    row.li.classList.toggle('streaming', row.open)
  }

  function eventRow(at, type, agent, text) {
    const li = el('li', 'new')
    li.append(el('span', 't', clock(at)), el('span', typeClass(type), type), el('span', 'ag', agent), el('span', 'c', text))
    li.title = type
    return li
  }

  return {
    open: openStream,
    close: closeStream,
    clear() {
      dropQueue()
      streams.clear()
      restart = false
      $('d-timeline').replaceChildren()
    },
  }
}
