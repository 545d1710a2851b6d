// The live timeline: follows one workflow over EventSource (which reconnects by
// itself with Last-Event-ID), batches DOM work per animation frame, and merges
// streamed tokens of one action into one growing row.
import { clock, el, summary, typeClass } from './format.js'

const MAX_ROWS = 1500
const $ = (id) => document.getElementById(id)

/**
 * Creates the follower. `hooks.event(ev)` sees every non-token event,
 * `hooks.reset(status)` a trimmed history, `hooks.end(status)` the end, `hooks.open()` each (re)connect,
 * and `hooks.over(wf)` is asked, when the browser gave a stream up, whether the workflow is over.
 */
export function createLive(hooks) {
  let source = null
  let pending = []
  let flushing = false
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

  function closeStream() {
    clearTimeout(retryTimer)
    if (source) source.close()
    source = null
    pending = []
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
        // and look at the status. Only a 204 ends it; otherwise fetch the rest later.
        void fetch(eventsUrl(wf, lastId), { credentials: 'same-origin' }).then(
          (res) => {
            void res.body?.cancel()
            return res.status === 204
          },
          () => false,
        ).then((complete) => {
          if (source !== es) return
          if (complete) setConn('ended', 'ended')
          else again(true)
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
      try {
        pending.push(JSON.parse(m.data))
      } catch {
        return
      }
      scheduleFlush()
    }
    es.addEventListener('reset', (m) => {
      if (source !== es) return
      const data = JSON.parse(m.data)
      streams.clear()
      $('d-timeline').replaceChildren(el('li', 'note', 'Earlier events were trimmed from the stream; the status below is current.'))
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

  // Tokens can arrive hundreds per second: batch DOM work into one pass per frame.
  function scheduleFlush() {
    if (flushing) return
    flushing = true
    requestAnimationFrame(() => {
      flushing = false
      const batch = pending.splice(0)
      const ol = $('d-timeline')
      const stick = $('d-follow').checked
      for (const item of batch) addEvent(ol, item)
      while (ol.children.length > MAX_ROWS) ol.firstElementChild.remove()
      if (stick) ol.scrollTop = ol.scrollHeight
    })
  }

  function addEvent(ol, { streamId, event: ev }) {
    const agent = ev.metadata?.agent ?? ''
    const at = ev.metadata?.at ?? Number(streamId.split('-')[0])
    if (ev.type === 'token') {
      const key = `${ev.metadata?.actionId ?? ''}:${agent}`
      let row = streams.get(key)
      if (!row || !row.isConnected) {
        row = eventRow(at, 'token', agent, '')
        row.classList.add('streaming')
        row.querySelector('.c').classList.add('stream')
        streams.set(key, row)
        ol.append(row)
      }
      row.querySelector('.c').textContent += typeof ev.content === 'string' ? ev.content : JSON.stringify(ev.content)
      return
    }
    // Any other event of the same action closes that action's token stream.
    for (const [key, row] of streams) {
      if (key.startsWith(`${ev.metadata?.actionId ?? '-'}:`)) {
        row.classList.remove('streaming')
        streams.delete(key)
      }
    }
    ol.append(eventRow(at, ev.type, agent, summary(ev)))
    hooks.event(ev)
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
      streams.clear()
      $('d-timeline').replaceChildren()
    },
  }
}
