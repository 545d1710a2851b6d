// The readable live view of `troupe run --follow` and `troupe tail`: one line per
// event, streamed tokens written inline as they arrive.
import type { StreamedEvent } from '../types.ts'

const useColor = process.stdout.isTTY && !process.env.NO_COLOR
const paint = (code: number, s: string): string => (useColor ? `\x1b[${code}m${s}\x1b[0m` : s)

/**
 * `s` safe to print on a terminal: control characters other than tab and
 * newline (C0, DEL, and C1, whose 0x9b starts a CSI sequence as ESC [ does)
 * become visible escapes, so event text cannot move the cursor, clear the
 * screen or retitle the window.
 */
export function printable(s: string): string {
  return s.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

function short(v: unknown, max = 100): string {
  const s = printable(typeof v === 'string' ? v : JSON.stringify(v) ?? '')
  return s.length > max ? `${s.slice(0, max - 1)}…` : s
}

/** Renders events to a writable stream, keeping token runs on one line. */
export class EventRenderer {
  private inTokens = false

  constructor(private readonly out: NodeJS.WritableStream = process.stdout) {}

  write(e: StreamedEvent): void {
    const ev = e.event
    const agent = printable(String(ev.metadata?.agent ?? ''))
    if (ev.type === 'token') {
      if (!this.inTokens) this.out.write(`${paint(90, time(ev.metadata?.at))} ${paint(36, agent.padEnd(12))} `)
      this.inTokens = true
      this.out.write(typeof ev.content === 'string' ? printable(ev.content) : short(ev.content))
      return
    }
    if (this.inTokens) this.out.write('\n')
    this.inTokens = false
    this.out.write(`${paint(90, time(ev.metadata?.at))} ${paint(36, agent.padEnd(12))} ${paint(colorOf(ev.type), printable(String(ev.type)).padEnd(20))} ${describe(ev.type, ev.content)}\n`)
  }

  end(): void {
    if (this.inTokens) this.out.write('\n')
    this.inTokens = false
  }
}

function time(at: unknown): string {
  return typeof at === 'number' ? new Date(at).toISOString().slice(11, 23) : '            '
}

function colorOf(type: string): number {
  if (type.endsWith('.failed') || type.endsWith('.dead') || type === 'workflow.cancelled') return 31
  if (type === 'workflow.completed' || type === 'action.completed') return 32
  if (type === 'agent.transition') return 33
  return 0
}

function describe(type: string, c: unknown): string {
  const o = (c ?? {}) as Record<string, unknown>
  switch (type) {
    case 'agent.transition':
      return `${short(o.from, 40)} → ${short(o.to, 40)} (on ${short(o.action, 30)})`
    case 'action.enqueued':
      return `${short(o.type ?? '', 30)} → ${short(o.agent, 20)}${o.from ? ` from ${short(o.from, 20)}` : ''}`
    case 'action.completed':
      return `${short(o.actionId, 24)} in ${short(o.durationMs)} ms`
    case 'action.failed':
    case 'action.dead':
      return `${short(o.actionId, 24)}: ${short(o.error, 120)}`
    case 'action.requeued': {
      const previous = (o.previous ?? {}) as Record<string, unknown>
      return `${short(o.actionId, 24)} → ${short(o.agent, 20)}, dead before: ${short(previous.error ?? '', 100)}`
    }
    default:
      return short(c, 140)
  }
}
