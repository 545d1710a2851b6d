// Formatting for the web UI: DOM building, state values, times and one-line
// summaries of workflow events.

/** Creates an element with a class and text. */
export function el(tag, cls, text) {
  const e = document.createElement(tag)
  if (cls) e.className = cls
  if (text !== undefined) e.textContent = text
  return e
}

/** An XState state value as text: `a`, or `parent.child | other.x` for nested/parallel states. */
export function stateText(v) {
  if (v === null || v === undefined) return '—'
  if (typeof v === 'string') return v
  if (typeof v === 'object') {
    const parts = Object.entries(v).map(([k, sub]) => (sub && typeof sub === 'object' ? `${k}.${stateText(sub)}` : `${k}.${sub}`))
    return parts.join(' | ')
  }
  return String(v)
}

/** `HH:MM:SS.mmm` in local time. */
export function clock(ms) {
  const d = new Date(ms)
  return `${d.toTimeString().slice(0, 8)}.${String(d.getMilliseconds()).padStart(3, '0')}`
}

/** `5s ago`, `3m ago`, ... */
export function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000))
  if (s < 60) return `${s}s ago`
  if (s < 3600) return `${Math.round(s / 60)}m ago`
  if (s < 86400) return `${Math.round(s / 3600)}h ago`
  return new Date(ms).toLocaleDateString()
}

/** A value as at most `max` characters of text. */
export function short(value, max = 160) {
  const s = typeof value === 'string' ? value : JSON.stringify(value)
  return s && s.length > max ? `${s.slice(0, max)}…` : s ?? ''
}

/** One line describing a workflow event. */
export function summary(ev) {
  const c = ev.content && typeof ev.content === 'object' ? ev.content : {}
  switch (ev.type) {
    case 'workflow.started': return `entry ${c.entry ?? ''} · ${c.type ?? ''}`
    case 'workflow.status': return `status → ${c.status ?? ''}`
    case 'workflow.completed': return `completed ${c.result !== undefined ? short(c.result) : ''}`
    case 'workflow.failed': return `failed: ${short(c.error ?? c.reason ?? c)}`
    case 'workflow.cancelled': return `cancelled: ${short(c.reason ?? '')}`
    case 'action.enqueued': return `→ ${c.agent ?? ''}${c.type ? `: ${c.type}` : ''}${c.from ? ` (from ${c.from})` : ''}${c.availableAt > Date.now() ? ` at ${clock(c.availableAt)}` : ''}`
    case 'action.completed': return `✓ ${c.agent ?? ''}${c.durationMs !== undefined ? ` in ${c.durationMs} ms` : ''}`
    case 'action.failed': return `✗ ${c.agent ?? ''}: ${short(c.error ?? '')}`
    case 'action.dead': return `dead-lettered: ${short(c.error ?? '')}`
    case 'agent.transition': return `${stateText(c.from)} → ${stateText(c.to)}`
    default: return short(ev.content)
  }
}

/** CSS classes of an event type's label. */
export function typeClass(type) {
  if (type === 'workflow.failed' || type === 'action.failed' || type === 'action.dead') return 'ty failed'
  const head = type.split('.')[0]
  return ['workflow', 'action', 'agent'].includes(head) ? `ty ${head}` : 'ty'
}

