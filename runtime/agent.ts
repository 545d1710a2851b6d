// Agents: named XState v5 machines plus delivery policy. Agent code talks to the
// runtime through XState's own `emit`: the helpers below build emitted events of
// reserved `troupe.*` types that the runtime collects while it delivers an action.
import { emit, type ActionFunction, type AnyStateMachine, type EventObject, type MachineContext, type ParameterizedObject } from 'xstate'
import { MAX_TIMER_MS } from './config.ts'
import { assertAgentName, assertActionType } from './redis/keys.ts'
import { TroupeError } from './errors.ts'
import { MAX_DELAY_MS } from './types.ts'

/** Retry backoff: `min(maxMs, initialMs * factor^(attempt-1))`, then full jitter of `jitter` (0..1) of it. */
export interface BackoffPolicy {
  initialMs: number
  maxMs: number
  factor: number
  jitter: number
}

/** What `defineAgent` accepts. */
export interface AgentOptions<TMachine extends AnyStateMachine = AnyStateMachine> {
  /** Unique agent name: 1-64 characters from `A-Z a-z 0-9 _ . -`. */
  name: string
  /** The XState v5 machine; actions arrive as events `{ type, payload, meta }`. */
  machine: TMachine
  /** Actors of this agent one runtime process works on at once (default 16). */
  concurrency?: number
  /** Deliveries before an action is dead-lettered (default 3). */
  maxAttempts?: number
  backoff?: Partial<BackoffPolicy>
  /** Time one action may take before it is aborted and retried (default 5 minutes). */
  actionTimeoutMs?: number
  /**
   * Version stored with each snapshot (default 1). An older snapshot runs `migrate`
   * (or fails the action without one); a newer one, written by a newer deployment
   * during a rolling update, is handed back for a process of that version.
   */
  version?: number
  /**
   * Upgrades a persisted snapshot written by an older `version`. It must return
   * the snapshot synchronously: a promise (an `async` function) is refused as
   * any failed migrate is (the actor's actions are dead-lettered with the
   * reason, its stored snapshot kept).
   */
  migrate?: (snapshot: unknown, fromVersion: number) => unknown
}

/** A validated agent definition with defaults filled in. */
export interface AgentDefinition<TMachine extends AnyStateMachine = AnyStateMachine> {
  readonly kind: 'troupe.agent'
  readonly name: string
  readonly machine: TMachine
  readonly concurrency: number
  readonly maxAttempts: number
  readonly backoff: BackoffPolicy
  readonly actionTimeoutMs: number
  readonly version: number
  readonly migrate?: (snapshot: unknown, fromVersion: number) => unknown
  /** Every event type the machine handles somewhere: the action types it accepts (wildcards apart). */
  readonly actionTypes: readonly string[]
  /** The machine's wildcard descriptors (`*`, `research.*`): see {@link handlesType}. */
  readonly actionPatterns: readonly string[]
}

function positiveInt(v: number | undefined, fallback: number, what: string, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return fallback
  if (!Number.isInteger(v) || v < 1 || v > max) throw new TroupeError('config', `${what} must be an integer from 1 to ${max}, got ${String(v)}`)
  return v
}


/**
 * Defines an agent: a named XState machine with its delivery policy.
 *
 * @example
 * ```ts
 * export const greeter = defineAgent({
 *   name: 'greeter',
 *   machine: setup({}).createMachine({
 *     on: { greet: { actions: [emitEvent('greeting', ({ event }) => `hi ${event.payload.name}`), completeWorkflow()] } },
 *   }),
 * })
 * ```
 */
export function defineAgent<TMachine extends AnyStateMachine>(opts: AgentOptions<TMachine>): AgentDefinition<TMachine> {
  assertAgentName(opts.name)
  if (!opts.machine || typeof (opts.machine as { transition?: unknown }).transition !== 'function') {
    throw new TroupeError('config', `agent ${opts.name}: machine must be an XState v5 machine (setup(...).createMachine(...))`)
  }
  const backoff = backoffPolicy(opts.name, opts.backoff)
  const machine = opts.machine as AnyStateMachine
  const def: AgentDefinition<TMachine> = {
    kind: 'troupe.agent',
    name: opts.name,
    machine: opts.machine,
    concurrency: positiveInt(opts.concurrency, 16, `agent ${opts.name}: concurrency`),
    maxAttempts: positiveInt(opts.maxAttempts, 3, `agent ${opts.name}: maxAttempts`),
    backoff,
    actionTimeoutMs: positiveInt(opts.actionTimeoutMs, 5 * 60_000, `agent ${opts.name}: actionTimeoutMs`, MAX_TIMER_MS),
    version: positiveInt(opts.version, 1, `agent ${opts.name}: version`),
    actionTypes: [...new Set(machine.events.filter((t: string) => !t.startsWith('xstate.') && !t.includes('*')))],
    // Kept apart (no one can send '*' as a type; the UI offers actionTypes), and
    // matched by handlesType as XState matches them.
    actionPatterns: [...new Set(machine.events.filter((t: string) => !t.startsWith('xstate.') && t.includes('*')))],
    ...(opts.migrate ? { migrate: opts.migrate } : {}),
  }
  return def
}

/**
 * Whether an agent whose machine handles `actionTypes` takes an action of
 * `type`: listed, or matched by a wildcard descriptor as XState matches one
 * (`*` any type, `a.*` `a` itself and any type under `a.`).
 */
export function handlesType(actionTypes: readonly string[], type: string): boolean {
  return actionTypes.some((t) => t === type || t === '*' || (t.endsWith('.*') && (type.startsWith(t.slice(0, -1)) || type === t.slice(0, -2))))
}

/** True for values made by {@link defineAgent} (used when loading an agents module). */
export function isAgentDefinition(v: unknown): v is AgentDefinition {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'troupe.agent'
}

/**
 * The retry policy with its defaults, every field checked: a NaN or an
 * `undefined` (an unset environment variable read into it) became a NaN delay,
 * which the commit script could not encode, and the failing action was left
 * neither in flight nor queued.
 */
function backoffPolicy(name: string, given: Partial<BackoffPolicy> | undefined): BackoffPolicy {
  const p: BackoffPolicy = { initialMs: 500, maxMs: 60_000, factor: 2, jitter: 0.5 }
  for (const [k, v] of Object.entries(given ?? {})) if (v !== undefined && k in p) p[k as keyof BackoffPolicy] = v
  // One bound given alone moves the other's default out of its way, as the
  // delay's min(maxMs, ...) always allowed: { maxMs: 200 } is fast retries.
  const has = (k: keyof BackoffPolicy): boolean => given?.[k] !== undefined
  if (has('maxMs') && !has('initialMs') && typeof p.maxMs === 'number') p.initialMs = Math.min(p.initialMs, p.maxMs)
  if (has('initialMs') && !has('maxMs') && typeof p.initialMs === 'number') p.maxMs = Math.max(p.maxMs, p.initialMs)
  const bad = (field: string, want: string): TroupeError => new TroupeError('config', `agent ${name}: backoff.${field} must be ${want}`)
  if (!(typeof p.initialMs === 'number' && p.initialMs >= 0 && p.initialMs <= MAX_DELAY_MS)) throw bad('initialMs', `a number of ms from 0 to ${MAX_DELAY_MS}`)
  if (!(typeof p.maxMs === 'number' && p.maxMs >= p.initialMs && p.maxMs <= MAX_DELAY_MS)) throw bad('maxMs', `a number of ms from initialMs to ${MAX_DELAY_MS}`)
  if (!(typeof p.factor === 'number' && p.factor >= 1 && Number.isFinite(p.factor))) throw bad('factor', 'a finite number, at least 1')
  if (!(typeof p.jitter === 'number' && p.jitter >= 0 && p.jitter <= 1)) throw bad('jitter', 'within 0..1')
  return p
}

/** Delay before retry number `attempt` (1-based) under `policy`; `random` is injectable for tests. */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  // factor ** attempt overflows to Infinity after enough attempts: min() keeps it at maxMs.
  const base = Math.min(policy.maxMs, policy.initialMs * policy.factor ** Math.max(0, attempt - 1))
  const jitter = base * policy.jitter
  const d = Math.round(base - jitter + random() * jitter)
  return Number.isFinite(d) ? Math.min(Math.max(0, d), MAX_DELAY_MS) : policy.maxMs
}

// ---- agent-side helpers (XState actions built on `emit`) -------------------------

/* eslint-disable @typescript-eslint/no-explicit-any -- helpers must fit any machine's context and event types */
/** A type left open: the helpers' type parameters where nothing infers them (outside a machine). */
type Open = any
/**
 * What a helper's functions get: the machine's context and the event being
 * handled, typed as the machine types them where the helper stands inside one
 * (see {@link HelperAction}), `any` elsewhere.
 */
export interface ExprArgs<TContext = Open, TEvent = Open> {
  context: TContext
  event: TEvent
}
/** An XState action usable in any machine (its event and context types are left open). */
export type TroupeAction = ActionFunction<any, any, any, any, never, never, never, never, any>
/**
 * What the helpers return: an XState action whose types TypeScript infers
 * from the place it stands in, as for XState's own `assign` and `emit`.
 * Inside `setup(...).createMachine(...)` a helper's `({ context, event })`
 * then gets the machine's context and the event of its transition
 * (`event.payload` typed by the machine's `ActionEvent`); outside a machine
 * (a function returning a list of actions) both stay `any`, as before. The
 * helpers' function parameters are `NoInfer`: the place alone decides, so a
 * function annotated with less than the machine's context
 * (`({ context }: { context: { n: number } })`) still fits, as it did when
 * everything was `any` (inferred from the annotation, the action no longer fit).
 * What it emits stays `any`: the `troupe.*` events are the runtime's, so an
 * action typed as emitting nothing (`never`) or the machine's own events
 * still takes a helper.
 */
export type HelperAction<
  TContext extends MachineContext = Open,
  TExpressionEvent extends EventObject = Open,
  TParams extends ParameterizedObject['params'] | undefined = Open,
  TEvent extends EventObject = Open,
> = ActionFunction<TContext, TExpressionEvent, TEvent, TParams, never, never, never, never, Open>
/** A value, or a function of `{ context, event }` computing it when the action runs. */
export type Resolvable<T, TContext = Open, TEvent = Open> = T | ((args: ExprArgs<TContext, TEvent>) => T)
/**
 * A JSON-able value (payload, event content, result), or a function of
 * `{ context, event }` computing it when the action runs. Not
 * `Resolvable<unknown>`: that union is just `unknown`, which gives an inline
 * `({ event }) => ...` no parameter type, and under `strict` the README's first
 * example failed to compile (implicit any).
 */
export type ResolvableValue<TContext = Open, TEvent = Open> = ((args: ExprArgs<TContext, TEvent>) => unknown) | string | number | boolean | null | object

function emitAny<TContext extends MachineContext, TExpressionEvent extends EventObject, TParams extends ParameterizedObject['params'] | undefined, TEvent extends EventObject>(
  fn: (args: ExprArgs) => { type: string; [k: string]: unknown },
): HelperAction<TContext, TExpressionEvent, TParams, TEvent> {
  // The emitted troupe.* events are the runtime's, whatever the machine declares it emits.
  return emit<any, any, any, any, any>(fn) as HelperAction<TContext, TExpressionEvent, TParams, TEvent>
}
/* eslint-enable @typescript-eslint/no-explicit-any */

function resolve<T>(v: Resolvable<T> | undefined, args: ExprArgs): T | undefined {
  return typeof v === 'function' ? (v as (a: ExprArgs) => T)(args) : v
}

/**
 * A send's delay as given: 0 when none was, else whatever it resolved to, even
 * undefined (a function reading a missing field), which the runtime refuses
 * rather than take as "now" (see LiveActor).
 */
function delayOf(v: Resolvable<number> | undefined, args: ExprArgs): unknown {
  return v === undefined ? 0 : resolve(v, args)
}

/** Prefixes of the event types the runtime raises itself (workflow.completed ends every follower). */
const RESERVED_EVENT_PREFIXES = ['workflow.', 'action.', 'agent.', 'troupe.', 'system.'] as const

/** Why agent code may not emit an event of `type`, or null when it may. */
export function reservedEventType(type: string): string | null {
  const p = RESERVED_EVENT_PREFIXES.find((x) => type.startsWith(x))
  return p ? `event type ${JSON.stringify(type)} is reserved: the runtime raises the ${p}* events itself (followers take workflow.completed as the end)` : null
}

/** Emitted-event types the runtime reserves. */
export const CONTROL = {
  send: 'troupe.send',
  event: 'troupe.event',
  complete: 'troupe.complete',
  fail: 'troupe.fail',
} as const

/**
 * XState action: sends an action to another agent (or, with `to === own name`, to
 * itself) in the same workflow. It takes effect atomically with the ack of the
 * action being handled; `delayMs` makes it a durable timer; `join` holds it
 * until its siblings have been sent too (a fan-in, see {@link JoinOptions}).
 *
 * @example
 * ```ts
 * on: { plan: { actions: sendToAgent('researcher', 'research', ({ event }) => ({ topic: event.payload.topic })) } }
 * // each of three researchers; the writer gets the three findings in one activation
 * sendToAgent('writer', 'finding', ({ event }) => event.output, { join: { key: 'findings', of: 3 } })
 * ```
 */
export function sendToAgent<TContext extends MachineContext = Open, TExpressionEvent extends EventObject = Open, TParams extends ParameterizedObject['params'] | undefined = Open, TEvent extends EventObject = Open>(
  to: string, type: string, payload?: ResolvableValue<NoInfer<TContext>, NoInfer<TExpressionEvent>>, opts: SendOptions<NoInfer<TContext>, NoInfer<TExpressionEvent>> = {},
): HelperAction<TContext, TExpressionEvent, TParams, TEvent> {
  assertAgentName(to)
  assertActionType(type)
  return emitAny((args: ExprArgs) => ({
    type: CONTROL.send, to, actionType: type, payload: resolve(payload, args) ?? null, delayMs: delayOf(opts.delayMs, args),
    join: opts.join === undefined ? null : resolve(opts.join, args) ?? null,
  }))
}

/**
 * A fan-in: actions sent to one agent of a workflow with the same `key` are held
 * in its mailbox until `of` of them have been sent (since the last time that key
 * let its actions go), then become due together, in the order they were sent, so
 * the agent usually takes them in one activation instead of one each. If they are
 * not all sent within `timeoutMs` of the first (default 10 minutes), those held so
 * far become due at that moment all the same: a join never strands work (a sender
 * dead-lettered, a branch that decided to send nothing), and one sent late (up
 * to `of` in all, within another timeout) is due at once. Use a key per round
 * (`findings-${round}`) when a workflow joins more than once.
 */
export interface JoinOptions {
  /** Names the join among the receiver's: 1-200 characters. */
  key: string
  /** How many actions complete it: an integer from 1 to 1000. */
  of: number
  /** How long the first may wait for the rest, ms (default 600000; at most ten years). */
  timeoutMs?: number
}

/** Options of {@link sendToAgent}. */
export interface SendOptions<TContext = Open, TEvent = Open> {
  /**
   * Due this many ms after the commit (a durable timer). Not with `join`. A
   * negative number means now (a due time already past); a value (or a
   * function's result) that is not a finite number, `undefined` included, or
   * one past ten years fails the action.
   */
  delayMs?: Resolvable<number, TContext, TEvent>
  /** Held until the join is complete (see {@link JoinOptions}). */
  join?: Resolvable<JoinOptions, TContext, TEvent>
}

/**
 * XState action: schedules an action to this same agent after `delayMs` (a durable
 * timer: unlike XState `after`, it survives restarts and deactivation).
 *
 * @example
 * ```ts
 * entry: sendToSelf('tick', null, { delayMs: 60_000 })
 * ```
 */
export function sendToSelf<TContext extends MachineContext = Open, TExpressionEvent extends EventObject = Open, TParams extends ParameterizedObject['params'] | undefined = Open, TEvent extends EventObject = Open>(
  type: string, payload?: ResolvableValue<NoInfer<TContext>, NoInfer<TExpressionEvent>>, opts: { delayMs?: Resolvable<number, NoInfer<TContext>, NoInfer<TExpressionEvent>> } = {},
): HelperAction<TContext, TExpressionEvent, TParams, TEvent> {
  assertActionType(type)
  return emitAny((args: ExprArgs) => ({ type: CONTROL.send, to: '', actionType: type, payload: resolve(payload, args) ?? null, delayMs: delayOf(opts.delayMs, args) }))
}

/**
 * XState action: publishes a custom WorkflowEvent: live while the action is still
 * running (an action whose machine waits on invoked logic), otherwise with the
 * action's commit. Inside `fromPromise`/`fromCallback` logic, call that logic's
 * own `emit({ type, content })` instead: the runtime listens to child actors
 * too. Types starting `workflow.`, `action.`, `agent.`, `troupe.` or `system.`
 * are the runtime's own and refused (at definition here; an emitted one fails
 * its action).
 *
 * @example
 * ```ts
 * actions: emitEvent('progress', ({ context }) => ({ done: context.done }))
 * ```
 */
export function emitEvent<TContext extends MachineContext = Open, TExpressionEvent extends EventObject = Open, TParams extends ParameterizedObject['params'] | undefined = Open, TEvent extends EventObject = Open>(type: string, content?: ResolvableValue<NoInfer<TContext>, NoInfer<TExpressionEvent>>): HelperAction<TContext, TExpressionEvent, TParams, TEvent> {
  assertActionType(type)
  const reserved = reservedEventType(type)
  if (reserved) throw new TroupeError('bad_type', reserved)
  return emitAny((args: ExprArgs) => ({ type: CONTROL.event, eventType: type, content: resolve(content, args) ?? null }))
}

/**
 * XState action: completes the workflow with `result` when the current action commits.
 *
 * @example
 * ```ts
 * actions: completeWorkflow(({ context }) => ({ report: context.draft }))
 * ```
 */
export function completeWorkflow<TContext extends MachineContext = Open, TExpressionEvent extends EventObject = Open, TParams extends ParameterizedObject['params'] | undefined = Open, TEvent extends EventObject = Open>(result?: ResolvableValue<NoInfer<TContext>, NoInfer<TExpressionEvent>>): HelperAction<TContext, TExpressionEvent, TParams, TEvent> {
  return emitAny((args: ExprArgs) => ({ type: CONTROL.complete, result: resolve(result, args) ?? null }))
}

/**
 * XState action: fails the workflow with `reason` when the current action commits.
 *
 * @example
 * ```ts
 * actions: failWorkflow('reviewer rejected the draft twice')
 * ```
 */
export function failWorkflow<TContext extends MachineContext = Open, TExpressionEvent extends EventObject = Open, TParams extends ParameterizedObject['params'] | undefined = Open, TEvent extends EventObject = Open>(reason: Resolvable<string, NoInfer<TContext>, NoInfer<TExpressionEvent>>): HelperAction<TContext, TExpressionEvent, TParams, TEvent> {
  return emitAny((args: ExprArgs) => ({ type: CONTROL.fail, reason: resolve(reason, args) ?? 'failed' }))
}
