// Troupe web UI: plain ES module, no build step. Talks to /v1 with the session
// cookie (set by POST /v1/auth/session, HttpOnly so this script never sees it) and
// follows a workflow over EventSource, which resumes by itself with Last-Event-ID.

import { api, ApiError, endSession, fail, quiet, toast, whenUnauthorized } from './api.js'
import { ago, el, stateText } from './format.js'
import { createLive } from './live.js'

const $ = (id) => document.getElementById(id)
const FINAL = new Set(['workflow.completed', 'workflow.failed', 'workflow.cancelled'])

const state = {
  user: null,
  agents: [],
  list: [],
  cursor: null,
  current: null,
  status: null,
  statusTimer: null,
  // An action.dead arrived: the dead letters are read again when it is shown.
  deadStale: false,
}

const live = createLive({
  // Whatever changed while we were away (counts, dead letters) is read once more.
  open: () => refreshStatusSoon(),
  event: (ev) => applyToStatus(ev),
  shown: () => showStatusChanges(),
  reset: (status) => {
    state.status = status
    renderStatus()
  },
  end: () => refreshStatusSoon(),
  // Over, or no longer ours to see (a 401 also shows the sign-in); anything else,
  // the network or a gateway that is not ready included, means try the stream again.
  over: async (wf) => {
    try {
      const st = await api('GET', `/v1/workflows/${encodeURIComponent(wf)}`)
      const ended = ['completed', 'failed', 'cancelled'].includes(st.status)
      if (ended) refreshStatusSoon()
      return ended
    } catch (err) {
      return err instanceof ApiError && (err.status === 401 || err.status === 404)
    }
  },
  // The workflow was deleted or expired (404), or the session ended (401).
  gone: (status) => {
    if (status === 401) showSignIn('Your session ended: sign in again.')
  },
})
whenUnauthorized(() => showSignIn('Your session ended: sign in again.'))

// ---------- sign-in ----------

// Also when a session ends: nothing of the previous user's stays in the page
// (the next one to sign in may be someone else), and answers still under way
// for them are dropped (endSession).
function showSignIn(message) {
  endSession()
  live.close()
  live.clear()
  clearTimeout(state.statusTimer)
  Object.assign(state, { user: null, agents: [], list: [], cursor: null, current: null, status: null, statusTimer: null, deadStale: false })
  clearPage()
  $('app').hidden = true
  $('who').hidden = true
  $('signin').hidden = false
  const e = $('signin-error')
  e.hidden = !message
  e.textContent = message || ''
  $('credential').focus()
}

async function showApp(user) {
  state.user = user
  $('signin').hidden = true
  $('app').hidden = false
  $('who').hidden = false
  $('user-name').textContent = user
  await Promise.all([loadAgents(), loadList(true)])
  const wf = location.hash.slice(1)
  if (wf) await openWorkflow(wf)
  else showView('empty-view')
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const btn = e.submitter
  btn.disabled = true
  try {
    const r = await api('POST', '/v1/auth/session', { credential: $('credential').value.trim() })
    $('credential').value = ''
    await showApp(r.user)
  } catch (err) {
    const box = $('signin-error')
    box.hidden = false
    box.textContent = err.message
  } finally {
    btn.disabled = false
  }
})

function clearPage() {
  for (const id of ['wf-list', 'd-agents', 'd-counts', 'd-dead', 'start-agent', 'start-types', 'send-agent', 'send-types']) $(id).replaceChildren()
  for (const id of ['user-name', 'd-id', 'd-status', 'd-meta', 'start-hint']) $(id).textContent = ''
  for (const id of ['wf-more', 'wf-empty', 'dead-card', 'example-card', 'toast']) $(id).hidden = true
  for (const id of ['start-form', 'send-form']) $(id).reset()
  for (const id of ['start-type', 'send-type']) delete $(id).dataset.auto
  $('example-topic').value = $('example-topic').defaultValue
  showView('empty-view')
}

// Signed out only once the gateway said so (204, with the cookie cleared):
// otherwise the cookie may still be there and a reload would sign back in.
$('sign-out').addEventListener('click', async (e) => {
  const btn = e.currentTarget
  btn.disabled = true
  try {
    let res
    try {
      res = await fetch('/v1/auth/logout', { method: 'POST', headers: { accept: 'application/json' }, credentials: 'same-origin' })
    } catch {
      throw new Error('the gateway cannot be reached')
    }
    if (res.status !== 204) throw new ApiError(await res.json().catch(() => ({})), res.status)
    history.replaceState(null, '', location.pathname + location.search)
    showSignIn('Signed out.')
  } catch (err) {
    toast(`Sign-out failed: ${err.message}. You are still signed in; try again.`, true)
  } finally {
    btn.disabled = false
  }
})

// ---------- workflow list ----------

function renderList() {
  const ul = $('wf-list')
  ul.replaceChildren()
  for (const w of state.list) {
    const li = el('li')
    li.dataset.id = w.workflowId
    if (state.current === w.workflowId) li.classList.add('active')
    li.append(el('span', 'wf-id', w.workflowId), el('span', `pill ${w.status}`, w.status), el('span', 'wf-sub', `${w.entry} · ${ago(w.createdAt)}`))
    li.addEventListener('click', () => void openWorkflow(w.workflowId))
    ul.append(li)
  }
  $('wf-empty').hidden = state.list.length > 0
  $('wf-more').hidden = !state.cursor
}

async function loadList(reset) {
  try {
    const q = !reset && state.cursor ? `?limit=30&cursor=${encodeURIComponent(state.cursor)}` : '?limit=30'
    const r = await api('GET', `/v1/workflows${q}`)
    state.list = reset ? r.items : [...state.list, ...r.items]
    state.cursor = r.nextCursor
    renderList()
  } catch (err) {
    fail(err)
  }
}

$('wf-more').addEventListener('click', () => void loadList(false))

// The periodic refresh reads only the newest page: it updates statuses in place and
// prepends new workflows, so pages loaded with "Load more" stay.
async function refreshHead() {
  try {
    const r = await api('GET', '/v1/workflows?limit=30')
    const known = new Map(state.list.map((w) => [w.workflowId, w]))
    const fresh = []
    for (const w of r.items) {
      const k = known.get(w.workflowId)
      if (k) Object.assign(k, w)
      else fresh.push(w)
    }
    if (state.list.length === 0) state.cursor = r.nextCursor
    state.list = [...fresh, ...state.list]
    renderList()
  } catch (err) {
    quiet(err)
  }
}

function patchListStatus(wf, status) {
  const w = state.list.find((x) => x.workflowId === wf)
  if (!w || w.status === status) return
  w.status = status
  renderList()
}

// ---------- agents and the start form ----------

async function loadAgents() {
  try {
    state.agents = (await api('GET', '/v1/agents')).items
  } catch (err) {
    fail(err)
  }
  if (!state.user) return
  fillAgentSelect($('start-agent'), state.agents.map((a) => a.name))
  fillTypes('start')
  fillTypes('send')
  // Offered when the fleet runs examples/research-team (its planner takes `plan`).
  $('example-card').hidden = !state.agents.some((a) => a.name === 'planner' && a.actionTypes.includes('plan'))
}

// Options are replaced only when they changed: a list rebuilt under an open
// drop-down would close it.
function fillAgentSelect(select, names) {
  const keep = select.value
  if (names.length === select.options.length && names.every((n, i) => select.options[i].value === n)) return
  select.replaceChildren(...names.map((n) => el('option', '', n)))
  if (names.includes(keep)) select.value = keep
}

// Offers the picked agent's action types, and fills the type field with the
// first one unless the user typed in it: only a value the page filled itself
// (dataset.auto), or an empty one, is replaced.
function fillTypes(prefix) {
  const agent = state.agents.find((a) => a.name === $(`${prefix}-agent`).value)
  const types = agent ? agent.actionTypes : []
  $(`${prefix}-types`).replaceChildren(...types.map((t) => el('option', '', t)))
  const input = $(`${prefix}-type`)
  if (input.value === '' || input.value === input.dataset.auto) {
    input.value = types[0] ?? ''
    input.dataset.auto = input.value
  }
  if (prefix === 'start') $('start-hint').textContent = agent ? `${agent.name} handles: ${types.join(', ')}` : 'No agents registered: start a runtime with troupe start --agents <module>'
}

$('start-agent').addEventListener('change', () => fillTypes('start'))
$('send-agent').addEventListener('change', () => fillTypes('send'))

$('new-workflow').addEventListener('click', () => {
  live.close()
  state.current = null
  location.hash = ''
  renderList()
  showView('start-view')
  void loadAgents()
})

function parsePayload(id) {
  const text = $(id).value.trim()
  if (!text) return null
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new Error(`payload is not valid JSON: ${err.message}`)
  }
}

async function startWorkflow(btn, body) {
  btn.disabled = true
  try {
    const r = await api('POST', '/v1/workflows', body)
    toast(`Started ${r.workflowId}`)
    await loadList(true)
    await openWorkflow(r.workflowId)
    return true
  } catch (err) {
    fail(err)
    return false
  } finally {
    btn.disabled = false
  }
}

$('start-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  let body
  try {
    body = { agent: $('start-agent').value, type: $('start-type').value.trim(), payload: parsePayload('start-payload') }
  } catch (err) {
    fail(err)
    return
  }
  await startWorkflow(e.submitter, body)
})

$('start-example').addEventListener('click', async (e) => {
  const topic = $('example-topic').value.trim() || 'untitled'
  // The sign-off is the step a person takes: the send form is set up for it.
  if (await startWorkflow(e.currentTarget, { agent: 'planner', type: 'plan', payload: { topic, signOff: true } })) presetSend('reviewer', 'approve', '{"note": "looks good"}')
})

// ---------- one workflow ----------

function showView(id) {
  for (const v of ['start-view', 'detail-view', 'empty-view']) $(v).hidden = v !== id
}

async function openWorkflow(wf) {
  live.close()
  state.current = wf
  if (location.hash !== `#${wf}`) history.replaceState(null, '', `#${wf}`)
  renderList()
  let st
  try {
    st = await api('GET', `/v1/workflows/${encodeURIComponent(wf)}`)
  } catch (err) {
    fail(err)
    showView('empty-view')
    return
  }
  if (state.current !== wf) return
  state.status = st
  live.clear()
  renderStatus()
  showView('detail-view')
  void loadDead()
  live.open(wf)
}

function renderStatus() {
  const st = state.status
  if (!st) return
  $('d-id').textContent = st.workflowId
  const pill = $('d-status')
  pill.textContent = st.status
  pill.className = `pill ${st.status}`
  $('d-meta').textContent = `entry ${st.entry} · started ${new Date(st.createdAt).toLocaleString()}${st.error ? ` · error: ${st.error}` : ''}`
  $('d-cancel').hidden = ['completed', 'failed', 'cancelled'].includes(st.status)
  const ul = $('d-agents')
  const names = Object.keys(st.agents).sort()
  const existing = new Map([...ul.children].map((li) => [li.dataset.agent, li]))
  const items = names.map((name) => {
    const text = stateText(st.agents[name])
    let li = existing.get(name)
    if (!li) {
      li = el('li')
      li.dataset.agent = name
      li.append(el('span', 'name', name), el('span', 'state'))
      li.addEventListener('animationend', () => li.classList.remove('flash'))
    }
    const span = li.querySelector('.state')
    if (span.textContent !== text) {
      span.textContent = text
      li.classList.remove('flash')
      void li.offsetWidth
      li.classList.add('flash')
    }
    return li
  })
  // Re-inserting nodes would restart their animations: touch the list only when it changed.
  const same = items.length === ul.children.length && items.every((li, i) => ul.children[i] === li)
  if (names.length === 0) ul.replaceChildren(el('li', 'muted', 'no agent has run yet'))
  else if (!same) ul.replaceChildren(...items)
  const c = st.counts
  $('d-counts').replaceChildren(...[['actions', c.actions], ['queued', c.queued], ['done', c.done], ['dead', c.dead], ['malformed', c.malformed]].map(([k, v]) => {
    const d = el('div')
    d.append(el('dt', '', k), el('dd', '', String(v)))
    return d
  }))
  // The type field is filled when the agent picked changes, never by an event.
  const sendAgent = $('send-agent')
  const picked = sendAgent.value
  fillAgentSelect(sendAgent, [...new Set([...names, ...state.agents.map((a) => a.name)])])
  if (sendAgent.value !== picked) fillTypes('send')
}

// Counts change with nearly every event; one refetch per second at most is plenty.
function refreshStatusSoon() {
  if (state.statusTimer) return
  state.statusTimer = setTimeout(async () => {
    state.statusTimer = null
    const wf = state.current
    if (!wf) return
    try {
      const st = await api('GET', `/v1/workflows/${encodeURIComponent(wf)}`)
      if (state.current === wf) {
        state.status = st
        renderStatus()
        patchListStatus(wf, st.status)
      }
    } catch (err) {
      quiet(err)
      if (err instanceof TypeError) refreshStatusSoon()
    }
  }, 1000)
}

async function loadDead() {
  const wf = state.current
  try {
    const r = await api('GET', `/v1/workflows/${encodeURIComponent(wf)}/dead-letters`)
    if (state.current !== wf) return
    $('dead-card').hidden = r.items.length === 0
    $('d-dead').replaceChildren(...r.items.map((d) => {
      const li = el('li')
      const left = el('div')
      left.append(el('div', '', `${d.agent}: ${d.type} (attempt ${d.attempt})`), el('div', 'why', d.error))
      const btn = el('button', 'btn small', 'Retry')
      btn.type = 'button'
      btn.addEventListener('click', async () => {
        btn.disabled = true
        try {
          await api('POST', `/v1/workflows/${encodeURIComponent(wf)}/dead-letters/${encodeURIComponent(d.actionId)}/retry`)
          toast('Retried')
          await loadDead()
        } catch (err) {
          fail(err)
          btn.disabled = false
        }
      })
      li.append(left, btn)
      return li
    }))
  } catch (err) {
    quiet(err)
  }
}

function presetSend(agent, type, payload) {
  const select = $('send-agent')
  if (![...select.options].some((o) => o.value === agent)) return
  select.value = agent
  fillTypes('send')
  $('send-type').value = type
  $('send-type').dataset.auto = type
  $('send-payload').value = payload
}

$('send-form').addEventListener('submit', async (e) => {
  e.preventDefault()
  const btn = e.submitter
  btn.disabled = true
  try {
    const wf = state.current
    const body = { agent: $('send-agent').value, type: $('send-type').value.trim(), payload: parsePayload('send-payload') }
    await api('POST', `/v1/workflows/${encodeURIComponent(wf)}/actions`, body)
    toast(`Sent ${body.type} to ${body.agent}`)
  } catch (err) {
    fail(err)
  } finally {
    btn.disabled = false
  }
})

$('d-cancel').addEventListener('click', async () => {
  const wf = state.current
  if (!wf || !confirm(`Cancel workflow ${wf}?`)) return
  try {
    await api('POST', `/v1/workflows/${encodeURIComponent(wf)}/cancel`, {})
    refreshStatusSoon()
  } catch (err) {
    fail(err)
  }
})

// Events update the state as they arrive; the page shows it once they are on
// screen (once per frame, or per second in a hidden tab: see live.js).
function applyToStatus(ev) {
  const st = state.status
  if (!st) return
  const c = ev.content && typeof ev.content === 'object' ? ev.content : {}
  if (ev.type === 'agent.transition' && c.agent) st.agents[c.agent] = c.to
  else if (ev.type === 'workflow.status' && c.status) st.status = c.status
  else if (FINAL.has(ev.type)) st.status = ev.type.slice('workflow.'.length)
  else if (ev.type === 'action.dead') state.deadStale = true
}

function showStatusChanges() {
  const st = state.status
  if (!st) return
  if (state.deadStale) {
    state.deadStale = false
    void loadDead()
  }
  renderStatus()
  patchListStatus(st.workflowId, st.status)
  refreshStatusSoon()
}

// ---------- start ----------

window.addEventListener('hashchange', () => {
  const wf = location.hash.slice(1)
  if (state.user && wf && wf !== state.current) void openWorkflow(wf)
})

setInterval(() => {
  if (state.user && document.visibilityState === 'visible') void refreshHead()
}, 5000)

api('GET', '/v1/me', undefined, { quiet: true })
  .then((me) => showApp(me.user))
  .catch(() => showSignIn(''))
