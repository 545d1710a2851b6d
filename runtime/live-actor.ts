// One agent's XState actor inside one workflow, kept alive across the actions of
// an activation. Delivers an action as a machine event, collects what agent code
// does (sends, events, completion), streams transitions and events live while the
// action is still running, and reports a settled outcome for the commit.
import { createActor, type AnyActorRef, type AnyMachineSnapshot, type InspectionEvent } from 'xstate'
import { nanoid } from 'nanoid'
import { CONTROL, handlesType, reservedEventType, type AgentDefinition } from './agent.ts'
import { encodeEvent } from './events.ts'
import type { OutboxEntry, OutboxJoin } from './claims.ts'
import { newId } from './redis/keys.ts'
import { MAX_DELAY_MS, type ActionEvent, type ActionRecord } from './types.ts'

/** What delivering one action produced. */
export interface DeliveryOutcome {
  outcome: 'ok' | 'failed' | 'rejected'
  /** Why it failed or was rejected (rejections are not retried). */
  error: string
  events: string[]
  outbox: OutboxEntry[]
  op: '' | 'complete' | 'fail'
  opPayload: string
  stateValue: string
  transitions: number
  /** Failed because the activation was aborted (cancel, deadline, shutdown), not by agent code. */
  aborted?: boolean
  /** Rejected because the stored snapshot could not be restored (the agent's data, not the action, is at fault). */
  restoreFailed?: boolean
  /**
   * Rejected because no state of this machine handles the action's type at all
   * (not merely the current one): a newer version of the agent may (see
   * ActorActivation's hand-back for a rolling update).
   */
  unknownType?: boolean
}

/** The snapshot for a commit: JSON ('' = unchanged), or where serialising it failed (see takeSnapshot). */
export type TakenSnapshot = { json: string } | { json: string; badAt: number; error: string }

/**
 * Why an outgoing action cannot be sent. `transient`: it may be fine in a moment
 * (a target agent this process has not seen registered yet), so the action fails
 * and is retried instead of going straight to the dead letters.
 */
export interface SendProblem {
  error: string
  transient: boolean
}

/** Hooks the live actor needs from its activation. */
export interface LiveActorHooks {
  /** Publishes events now (while an action is still running), with the agent's state value JSON when it changed. */
  flush(events: string[], stateValue: string | null): Promise<void>
  /** Validates an outgoing action's target and payload; null when it may be sent. */
  checkSend(to: string, type: string, payloadJson: string): SendProblem | null
}

interface Current {
  record: ActionRecord
  attempt: number
  events: string[]
  outbox: OutboxEntry[]
  op: '' | 'complete' | 'fail'
  opPayload: string
  effectError: string | null
  /** The effect error may clear by itself (see SendProblem): retry rather than reject. */
  effectTransient: boolean
  live: boolean
  transitions: number
  flushedTransitions: number
}

/**
 * No child still running. XState keeps a finished child (a spawned promise that
 * resolved while its parent stayed in the state) in `children` until the state
 * exits, so counting children made such an action wait out its timeout and run
 * again on every attempt.
 */
function isSettled(s: AnyMachineSnapshot): boolean {
  if (s.status !== 'active') return true
  for (const child of Object.values(s.children as Record<string, AnyActorRef>)) {
    if ((child.getSnapshot() as { status?: string } | undefined)?.status === 'active') return false
  }
  return true
}

/**
 * Why an action that settled with a delayed XState event still pending (an
 * `after` timer, a `raise` or `sendTo` with a delay) cannot be kept, or null.
 * The actor is persisted and let go after its actions, and XState's timers live
 * in the process: the timer died with the actor (and one firing between two
 * actions of a batch changed the state without an action to publish or send
 * for), so the action is refused rather than stored without its timer.
 */
function pendingDelayedEvent(actor: ReturnType<typeof createActor>, who: string): string | null {
  const scheduled = actor.system.getSnapshot()._scheduledEvents
  for (const id in scheduled) {
    const s = scheduled[id]
    if (!s) continue
    return `${who} a delayed XState event '${s.event.type}' pending (${s.delay} ms): ` +
      'a Troupe actor is stored and let go between actions, so XState timers (after, raise or sendTo with a delay) cannot outlive the action; ' +
      'use sendToSelf(type, payload, { delayMs }) for a timer that survives'
  }
  return null
}

/** "a Map", "an Error": for the messages below. */
function named(name: string): string {
  return `${/^[AEIOU]/.test(name) ? 'an' : 'a'} ${name}`
}

/**
 * Plain for JSON: no prototype, or Object.prototype, also another realm's (an
 * object from a vm context or a worker's structured clone has its own
 * Object.prototype and round-trips exactly).
 */
function isPlainObject(value: object): boolean {
  const proto = Object.getPrototypeOf(value) as object | null
  if (proto === Object.prototype || proto === null) return true
  return Object.getPrototypeOf(proto) === null && (proto.constructor as { name?: string } | undefined)?.name === 'Object'
}

/** What a value JSON would store as something else, or null (see assertPlain). */
function notPlain(value: unknown): string | null {
  if (value instanceof Date) return 'a Date (JSON stores its text; keep its getTime() number instead)'
  switch (typeof value) {
    case 'function': return 'a function'
    case 'symbol': return 'a symbol'
    case 'number': return Number.isFinite(value) ? null : `the number ${String(value)} (JSON stores null)`
    case 'object': {
      if (value === null || Array.isArray(value) || value instanceof Error || isPlainObject(value)) return null
      const name = ((Object.getPrototypeOf(value) as object).constructor as { name?: string } | undefined)?.name
      return `${name ? named(name) : 'a class instance'} (JSON stores only its own fields as a plain object)`
    }
    default: return null
  }
}

/**
 * Refuses a context that JSON would silently store as something else (a Map
 * or a Set as `{}`, a Date as a string, a class instance as a plain object, a
 * function as nothing): the restored context would differ from the one the
 * next action ran with, and whether it did would depend on which actions
 * shared an activation. Thrown, the action fails through takeSnapshot's
 * "cannot be stored" path, naming the value. Only the machine's own context:
 * the rest of the snapshot is XState's. An Error is let through (XState's
 * `onError: { actions: assign({ error: ({ event }) => event.error }) }` is the
 * common way to keep one) and stored as `{ name, message }` (see errorFields);
 * returns whether it met one. A cycle is left to JSON.stringify, which refuses it.
 */
function assertPlain(value: unknown, path: string, within: object[]): boolean {
  const why = notPlain(value)
  if (why) throw new TypeError(`${path} holds ${why}; an agent's context must be plain JSON data`)
  if (typeof value !== 'object' || value === null || within.includes(value)) return false
  if (value instanceof Error) return true
  let errors = false
  within.push(value)
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) errors = assertPlain(value[i], `${path}[${i}]`, within) || errors
  } else {
    for (const key in value) {
      const v = (value as Record<string, unknown>)[key]
      if (v !== undefined) errors = assertPlain(v, `${path}.${key}`, within) || errors
    }
  }
  within.pop()
  return errors
}

/** JSON.stringify's replacer for a snapshot holding an Error: `{ name, message }` instead of the `{}` JSON makes of it. */
function errorFields(_key: string, value: unknown): unknown {
  return value instanceof Error ? { name: value.name, message: value.message } : value
}

/** A join's key and count may be at most these (see JoinOptions). */
const MAX_JOIN_KEY = 200
const MAX_JOIN_OF = 1000
const DEFAULT_JOIN_TIMEOUT_MS = 600_000

/**
 * Checks a send's `join` option as the machine resolved it: the join the commit
 * writes, null for none, or why it cannot be sent (the action then fails, as
 * for any other bad effect: these are the agent's code's mistakes, not the
 * moment's).
 */
export function joinOf(raw: unknown, delayMs: number): OutboxJoin | null | string {
  if (raw === null || raw === undefined) return null
  if (typeof raw !== 'object' || Array.isArray(raw)) return 'sendToAgent join must be an object { key, of, timeoutMs? }'
  const { key, of, timeoutMs } = raw as Record<string, unknown>
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_JOIN_KEY) return `sendToAgent join.key must be a string of 1-${MAX_JOIN_KEY} characters`
  if (typeof of !== 'number' || !Number.isInteger(of) || of < 1 || of > MAX_JOIN_OF) return `sendToAgent join.of must be an integer from 1 to ${MAX_JOIN_OF}, not ${JSON.stringify(of)}`
  const t = timeoutMs ?? DEFAULT_JOIN_TIMEOUT_MS
  if (typeof t !== 'number' || !Number.isFinite(t) || t < 1 || t > MAX_DELAY_MS) return `sendToAgent join.timeoutMs must be from 1 to ${MAX_DELAY_MS} ms, not ${JSON.stringify(t)}`
  // A joined action is due when its join lets it go; a delay on top would need a
  // second clock per action for no case we know of.
  if (delayMs > 0) return 'sendToAgent join cannot be combined with delayMs'
  return { key, of, timeoutMs: Math.round(t) }
}

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`
  try {
    return JSON.stringify(err) ?? 'unknown error'
  } catch {
    return 'unserialisable error'
  }
}

/** A bad value for a message: strings quoted, NaN and undefined as themselves. */
function shown(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v)
  if (typeof v === 'number' || v === undefined || v === null || typeof v === 'boolean') return String(v)
  return typeof v
}

/**
 * A workflow's error as stored: a string (getStatus and the workflow.failed
 * event hand it on as one). An object is JSON-encoded (it became "[object
 * Object]"), an Error gives its message. An object JSON cannot encode (a
 * cycle) throws, and the action fails as for any unencodable effect.
 */
function failReason(reason: unknown): string {
  if (typeof reason === 'string') return reason
  if (reason === undefined || reason === null) return 'failed'
  if (reason instanceof Error) return reason.message
  if (typeof reason === 'number' || typeof reason === 'bigint' || typeof reason === 'boolean') return String(reason)
  return JSON.stringify(reason) ?? `failed (a ${typeof reason} as the reason)`
}

/** What a delivery produced, from its bookkeeping. */
function outcomeOf(cur: Current, outcome: DeliveryOutcome['outcome'], error = ''): DeliveryOutcome {
  return {
    outcome, error, events: cur.events, outbox: outcome === 'ok' ? cur.outbox : [], op: outcome === 'ok' ? cur.op : '', opPayload: cur.opPayload,
    stateValue: '', transitions: cur.transitions,
  }
}

/** A restored XState actor plus the bookkeeping of the action it is handling. */
export class LiveActor {
  private actor: ReturnType<typeof createActor> | null = null
  private current: Current | null = null
  private prevValue = ''
  private flushing: Promise<void> = Promise.resolve()
  private flushQueued = false
  private settleWaiter: (() => void) | null = null
  /** The last committed persisted snapshot (JSON), the restore point after a failure. */
  private committed: string
  /** The snapshot after the last successful action not yet serialised (the newer restore point). */
  private lastOk: AnyMachineSnapshot | null = null
  /** The snapshot after each successful action since the last commit, in order (see takeSnapshot). */
  private okSnaps: AnyMachineSnapshot[] = []
  /** Actors of the current XState system whose emitted events we listen to, and its root. */
  private attached = new WeakSet<object>()
  private root: object | undefined
  private readonly inspector = this.inspect.bind(this)
  private readonly emitted = this.onEmitted.bind(this)
  private readonly snapshotObserver = {
    next: this.onSnapshot.bind(this),
    // The error is read from the snapshot when the action settles.
    error: this.onActorError.bind(this),
  }

  constructor(
    private readonly def: AgentDefinition,
    private readonly wf: string,
    snapshot: string,
    private readonly hooks: LiveActorHooks,
  ) {
    this.committed = snapshot
  }

  /** Creates (or re-creates after a failure) the XState actor from the committed snapshot. */
  private ensureActor(): ReturnType<typeof createActor> {
    if (this.actor) return this.actor
    // Bound methods, not closures: see the note on ActorActivation (tsx's keepNames).
    this.attached = new WeakSet<object>()
    this.root = undefined
    const persisted = this.lastOk ? this.def.machine.getPersistedSnapshot(this.lastOk) : this.committed ? (JSON.parse(this.committed) as unknown) : undefined
    const actor = createActor(this.def.machine, {
      ...(persisted ? { snapshot: persisted as never } : {}),
      input: { workflowId: this.wf, agent: this.def.name },
      inspect: this.inspector,
    })
    // XState does not throw on a snapshot it cannot restore (a state a newer
    // machine renamed and migrate() did not map): the actor comes up in 'error'.
    // Said here, the action is rejected as a restore failure with XState's
    // reason, instead of blaming the agent for being in 'error'.
    const made = actor.getSnapshot() as AnyMachineSnapshot
    if (made.status === 'error') throw made.error instanceof Error ? made.error : new Error(describe(made.error))
    actor.subscribe(this.snapshotObserver)
    this.prevValue = ''
    actor.start()
    // A fresh actor's start runs its initial state's entry, which arms that
    // state's `after` timers (a restore arms none): refused here, else the
    // timer ran in the process between actions, changing the state with no
    // action to publish or send for.
    const initialTimer = persisted ? null : pendingDelayedEvent(actor, 'its initial state left')
    if (initialTimer) {
      actor.stop()
      throw new Error(initialTimer)
    }
    this.prevValue = JSON.stringify((actor.getSnapshot() as AnyMachineSnapshot).value)
    this.actor = actor
    return actor
  }

  /**
   * Emitted events of invoked promise/callback logic reach only that child's
   * listeners, so attach to every actor of the system as it starts.
   */
  private inspect(ev: InspectionEvent): void {
    if (ev.type === '@xstate.actor' && !this.attached.has(ev.actorRef)) {
      this.root ??= ev.actorRef
      this.attached.add(ev.actorRef)
      ;(ev.actorRef as AnyActorRef).on('*', this.emitted)
    } else if (ev.type === '@xstate.microstep' && ev.actorRef === this.root) {
      // Microsteps are reported before the entered state's actions and
      // invocations run, so a transition is published ahead of what it causes.
      this.onTransition((ev as unknown as { snapshot: AnyMachineSnapshot }).snapshot.value)
    }
  }

  private onTransition(valueObj: unknown): void {
    const value = JSON.stringify(valueObj)
    const cur = this.current
    // The first snapshot (at start/restore) is not a transition.
    if (cur && this.prevValue !== '' && value !== this.prevValue) {
      cur.transitions++
      this.push(encodeEvent({
        workflowId: this.wf, type: 'agent.transition', agent: this.def.name, actionId: cur.record.id, attempt: cur.attempt, parentId: cur.record.eventId,
        content: { agent: this.def.name, from: JSON.parse(this.prevValue) as unknown, to: valueObj, action: cur.record.type },
      }))
    }
    this.prevValue = value
  }

  private onSnapshot(s: AnyMachineSnapshot): void {
    this.onTransition(s.value)
    if (isSettled(s)) this.settleWaiter?.()
  }

  private onActorError(): void {
    this.settleWaiter?.()
  }

  private onEmitted(e: { type: string; [k: string]: unknown }): void {
    const cur = this.current
    if (!cur) return
    const base = { workflowId: this.wf, agent: this.def.name, actionId: cur.record.id, attempt: cur.attempt, parentId: cur.record.eventId }
    try {
      switch (e.type) {
        case CONTROL.send: {
          const to = typeof e.to === 'string' && e.to !== '' ? e.to : this.def.name
          const type = String(e.actionType)
          const payloadJson = JSON.stringify(e.payload ?? null) as string | undefined
          if (payloadJson === undefined) {
            // A function or a symbol: JSON has no value for it.
            cur.effectError ??= `sendToAgent to '${to}' with a payload JSON cannot encode (${typeof e.payload})`
            return
          }
          const problem = this.hooks.checkSend(to, type, payloadJson)
          if (problem) {
            if (cur.effectError === null) {
              cur.effectError = problem.error
              cur.effectTransient = problem.transient
            }
            return
          }
          // Absent only from a send emitted by hand; the helpers always set it.
          const delay: unknown = 'delayMs' in e ? e.delayMs : 0
          const helper = e.to === '' ? 'sendToSelf' : 'sendToAgent'
          if (typeof delay !== 'number' || !Number.isFinite(delay)) {
            // It meant "now": a timer whose delay came from a missing field
            // (undefined, NaN) re-sent itself in a busy loop. A negative number
            // still means now: `dueAt - Date.now()` of a timer running late.
            if (cur.effectError === null) cur.effectError = `${helper} delayMs must be a finite number of ms (at most ${MAX_DELAY_MS}), not ${shown(delay)}`
            return
          }
          if (delay > MAX_DELAY_MS) {
            if (cur.effectError === null) cur.effectError = `${helper} delayMs ${delay} is beyond ${MAX_DELAY_MS} ms (ten years)`
            return
          }
          const delayMs = Math.max(0, Math.round(delay))
          const join = joinOf(e.join, delayMs)
          if (typeof join === 'string') {
            if (cur.effectError === null) cur.effectError = join
            return
          }
          const id = newId()
          const eventId = nanoid()
          const record: ActionRecord = { id, workflowId: this.wf, agent: to, type, payload: JSON.parse(payloadJson) as unknown, from: this.def.name, parentId: cur.record.id, eventId, enqueuedAt: Date.now() }
          cur.outbox.push({ to, actionId: id, record: JSON.stringify(record), delayMs, eventId, join })
          return
        }
        case CONTROL.complete:
          cur.op = 'complete'
          cur.opPayload = JSON.stringify({ result: e.result ?? null })
          return
        case CONTROL.fail:
          cur.op = 'fail'
          cur.opPayload = JSON.stringify({ error: failReason(e.reason) })
          return
        case CONTROL.event: {
          // emitEvent() refuses a reserved type when the agent is defined; a raw
          // emit of the control event gets the same check here, else a fake
          // workflow.completed ended every follower of a workflow going on.
          const type = String(e.eventType)
          const reserved = reservedEventType(type)
          if (reserved) {
            cur.effectError ??= reserved
            return
          }
          this.push(encodeEvent({ ...base, type, content: e.content }))
          return
        }
        default: {
          const { type, ...rest } = e
          const reserved = reservedEventType(type)
          if (reserved) {
            // Not published: a fake workflow.completed would end every follower.
            cur.effectError ??= reserved
            return
          }
          this.push(encodeEvent({ ...base, type, content: 'content' in rest ? rest.content : rest }))
        }
      }
    } catch (err) {
      cur.effectError ??= `agent effect could not be encoded: ${describe(err)}`
    }
  }

  /** Buffers an event for the commit, or streams it now while the action runs. */
  private push(json: string): void {
    const cur = this.current
    if (!cur) return
    cur.events.push(json)
    if (cur.live) this.scheduleFlush()
  }

  private scheduleFlush(): void {
    if (this.flushQueued) return
    this.flushQueued = true
    // One script call per microtask burst: tokens emitted together go out together.
    queueMicrotask(() => {
      this.flushQueued = false
      const cur = this.current
      if (!cur || cur.events.length === 0) return
      const batch = cur.events.splice(0)
      const state = cur.transitions > cur.flushedTransitions ? this.prevValue : null
      cur.flushedTransitions = cur.transitions
      this.flushing = this.flushing.then(() => this.hooks.flush(batch, state)).catch(() => {
        // Not published now: hand them to the commit instead, ahead of newer ones.
        if (this.current === cur) cur.events.unshift(...batch)
      })
    })
  }

  /** Stops the actor: aborts running invocations (their `signal`) and forgets uncommitted state. */
  discard(): void {
    const a = this.actor
    this.actor = null
    this.settleWaiter?.()
    a?.stop()
  }

  /**
   * Delivers one action; resolves when the actor is settled, failed, timed out
   * after `timeoutMs`, or the signal `abort()` returns fires. Timers and the
   * signal exist only for actions that wait.
   */
  async deliver(record: ActionRecord, attempt: number, abort: () => AbortSignal, timeoutMs: number): Promise<DeliveryOutcome> {
    const cur: Current = { record, attempt, events: [], outbox: [], op: '', opPayload: '', effectError: null, effectTransient: false, live: false, transitions: 0, flushedTransitions: 0 }
    this.current = cur
    try {
      return await this.deliverCurrent(cur, abort, timeoutMs)
    } finally {
      this.current = null
    }
  }

  private async deliverCurrent(cur: Current, signal: () => AbortSignal, timeoutMs: number): Promise<DeliveryOutcome> {
    const { record, attempt } = cur
    let actor: ReturnType<typeof createActor>
    try {
      actor = this.ensureActor()
    } catch (err) {
      // No snapshot: the machine failed to compute its initial state (a context factory that throws).
      const what = this.committed || this.lastOk ? 'restore' : 'start'
      return { ...outcomeOf(cur, 'rejected', `cannot ${what} ${this.def.name}: ${describe(err)}`), restoreFailed: true }
    }
    const event: ActionEvent = {
      type: record.type,
      payload: record.payload,
      meta: {
        actionId: record.id, workflowId: this.wf, agent: this.def.name, attempt, idempotencyKey: `${this.wf}:${record.id}`,
        ...(record.from ? { from: record.from } : {}), ...(record.parentId ? { parentId: record.parentId } : {}),
      },
    }
    const before = actor.getSnapshot() as AnyMachineSnapshot
    if (before.status !== 'active') return outcomeOf(cur, 'rejected', `agent ${this.def.name} is ${before.status} and accepts no more actions`)
    let accepted: boolean
    try {
      accepted = before.can(event)
    } catch (err) {
      // A guard that throws: send() would catch it and put the actor in error,
      // but can() lets it out. It is the agent code failing on this action.
      this.discard()
      return outcomeOf(cur, 'failed', describe(err))
    }
    if (!accepted) {
      const rejected = outcomeOf(cur, 'rejected', `agent ${this.def.name} in state ${JSON.stringify(before.value)} does not accept action '${record.type}'`)
      // Only here, off the path of accepted actions: the type's check walks the machine's types.
      return handlesType([...this.def.actionTypes, ...this.def.actionPatterns], record.type) ? rejected : { ...rejected, unknownType: true }
    }
    actor.send(event)
    let snap = actor.getSnapshot() as AnyMachineSnapshot
    if (!isSettled(snap)) {
      // From here on the action takes time: stream what it does as it happens.
      cur.live = true
      if (cur.events.length > 0) this.scheduleFlush()
      const abort = signal()
      let stopReason = ''
      let aborted = false
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.settleWaiter = null
          clearTimeout(timer)
          abort.removeEventListener('abort', onAbort)
          resolve()
        }
        const onAbort = (): void => {
          stopReason = abort.reason instanceof Error ? abort.reason.message : 'aborted'
          aborted = true
          done()
        }
        const timer = setTimeout(() => {
          stopReason = `timed out after ${timeoutMs} ms`
          done()
        }, timeoutMs)
        this.settleWaiter = done
        abort.addEventListener('abort', onAbort)
        if (abort.aborted) onAbort()
        else if (isSettled(actor.getSnapshot() as AnyMachineSnapshot)) done()
      })
      snap = actor.getSnapshot() as AnyMachineSnapshot
      await this.flushing
      if (stopReason && !isSettled(snap)) {
        this.discard()
        return { ...outcomeOf(cur, 'failed', stopReason), aborted }
      }
    }
    if (snap.status === 'error') {
      const err = describe(snap.error)
      this.discard()
      return outcomeOf(cur, 'failed', err)
    }
    if (cur.effectError) {
      this.discard()
      return outcomeOf(cur, cur.effectTransient ? 'failed' : 'rejected', cur.effectError)
    }
    const delayed = pendingDelayedEvent(actor, 'the action left')
    if (delayed) {
      // Refused at once: another attempt would leave the same timer.
      this.discard()
      return outcomeOf(cur, 'rejected', delayed)
    }
    // Snapshots are immutable: keeping the objects is free; the last is serialised once per commit.
    this.lastOk = snap
    this.okSnaps.push(snap)
    return { ...outcomeOf(cur, 'ok'), stateValue: this.prevValue }
  }

  private serialise(snap: AnyMachineSnapshot): string {
    const persisted = this.def.machine.getPersistedSnapshot(snap) as { context?: unknown }
    return JSON.stringify(persisted, assertPlain(persisted.context, 'context', []) ? errorFields : undefined)
  }

  /**
   * The persisted snapshot after the last successful action, as JSON for the
   * commit ('' when nothing changed since the last call). When it cannot be
   * serialised (a BigInt or a cycle in context), `badAt` is the index, among the
   * successful actions since the last call, of the first whose snapshot cannot,
   * and `json` the snapshot of the one before it ('' when there is none): the
   * caller commits up to there, fails that action and hands the rest back. The
   * actor then restarts from that snapshot.
   */
  takeSnapshot(): TakenSnapshot {
    const last = this.lastOk
    const snaps = this.okSnaps
    this.lastOk = null
    this.okSnaps = []
    if (!last) return { json: '' }
    try {
      const json = this.serialise(last)
      this.committed = json
      return { json }
    } catch (lastErr) {
      let json = ''
      for (let i = 0; i < snaps.length; i++) {
        let next: string
        try {
          next = this.serialise(snaps[i] as AnyMachineSnapshot)
        } catch (err) {
          if (json) this.committed = json
          this.discard()
          return { json, badAt: i, error: describe(err) }
        }
        json = next
      }
      // Not reached (the last one failed), unless serialising is not deterministic.
      this.discard()
      return { json: '', badAt: 0, error: describe(lastErr) }
    }
  }
}
