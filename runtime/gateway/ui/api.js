// HTTP helpers of the web UI: JSON calls to /v1 with the session cookie, problem
// details turned into errors, and the toast that reports them.

/** A problem+json answer from the gateway. */
export class ApiError extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title || `HTTP ${status}`)
    this.problem = problem
    this.status = status
  }
}

/** The answer to a request made before the session it belonged to ended: dropped unseen. */
export class Superseded extends Error {}

let onUnauthorized = () => undefined
// Bumped when a session ends (sign-out, or a 401): an answer to a request made
// before then must not put the previous user's data back on the page.
let session = 0

/** Ends the session's requests: answers to those still under way reject with Superseded. */
export function endSession() {
  session++
}

/** Registers what to do when the session ended (a 401 outside /v1/auth). */
export function whenUnauthorized(fn) {
  onUnauthorized = fn
}

/** One JSON call; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function api(method, path, body, { quiet = false } = {}) {
  const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin' }
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  const mine = session
  const res = await fetch(path, init)
  if (mine !== session) throw new Superseded(`${method} ${path} was made in a session that ended`)
  if (res.status === 204) return null
  const data = await res.json().catch(() => ({}))
  if (mine !== session) throw new Superseded(`${method} ${path} was made in a session that ended`)
  if (!res.ok) {
    if (res.status === 401 && !quiet && !path.startsWith('/v1/auth/')) onUnauthorized()
    throw new ApiError(data, res.status)
  }
  return data
}

/** Shows a short message in the corner. */
export function toast(message, bad = false) {
  const t = document.getElementById('toast')
  t.textContent = message
  t.className = bad ? 'toast bad' : 'toast'
  t.hidden = false
  clearTimeout(toast.timer)
  toast.timer = setTimeout(() => (t.hidden = true), bad ? 6000 : 2500)
}

/** Reports a failed user action. */
export function fail(err) {
  if ((err instanceof ApiError && err.status === 401) || err instanceof Superseded) return
  toast(err instanceof ApiError ? `${err.problem.title || 'Error'}: ${err.message}` : String(err.message || err), true)
}

// Background refreshes stay quiet when the network or the gateway is briefly
// away (a restart): the next poll or event retries, and the stream shows its state.
/** Reports a failed background refresh, unless the network was just away. */
export function quiet(err) {
  if (!(err instanceof TypeError)) fail(err)
}
