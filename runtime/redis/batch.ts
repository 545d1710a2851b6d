// Sends several commands in one write where possible. A single Redis gets one
// pipeline (commands reach the server in order, in one round trip). Redis Cluster
// cannot pipeline across slots, so there each command goes to its own node, all
// issued in the same tick: they leave the process together, but nothing orders
// two nodes (a node connected lazily, or stalled, runs its share later). Where a
// write must land after another one on a different node, use execPhases.
import { constants } from 'node:buffer'
import { Command, type Cluster, type Redis } from 'ioredis'
import type { PipelineWriteableStream } from 'ioredis/built/types.js'
import { fromRedisError } from '../errors.ts'
import type { RedisClient } from './connection.ts'
import { evalshaArgs, runScript, scriptFor, type ScriptName } from './scripts.ts'

/** One command of a batch: a plain Redis command or one of our scripts. */
export type Op = CmdOp | ScriptOp

/** A plain Redis command as an op. */
export interface CmdOp {
  cmd: string
  args: (string | number)[]
}

/** One of our scripts as an op. */
export interface ScriptOp {
  script: ScriptName
  keys: readonly string[]
  args: readonly (string | number)[]
}

/** The outcome of each op, in order: an error (mapped to TroupeError where ours) or the reply. */
export type OpResult = [Error | null, unknown]

/** True for a Redis Cluster client. */
export function isCluster(client: RedisClient): client is Cluster {
  return 'nodes' in client
}

function asError(e: unknown): Error {
  const m = fromRedisError(e)
  return m instanceof Error ? m : new Error(String(m))
}

/** Runs `ops` (see the module comment); never rejects for a single op's failure. */
export async function execOps(client: RedisClient, ops: readonly Op[]): Promise<OpResult[]> {
  if (ops.length === 0) return []
  if (isCluster(client)) {
    return await Promise.all(
      ops.map((op) =>
        ('script' in op ? runScript(client, op.script, op.keys, op.args) : client.call(op.cmd, ...op.args)).then(
          (v): OpResult => [null, v],
          (e: unknown): OpResult => [asError(e), null],
        ),
      ),
    )
  }
  const res = await sendBatch(client, ops)
  const noScript = (i: number): boolean => 'script' in (ops[i] as Op) && (res[i]?.[0]?.message.startsWith('NOSCRIPT') ?? false)
  const first = ops.findIndex((_op, i) => noScript(i))
  if (first >= 0) {
    // The server lost its script cache without our connection dropping (SCRIPT
    // FLUSH). What followed the first refused script already ran without it: an
    // enqueue's post-hint before the enqueue, which a pick can take and delete in
    // between, stranding the action. So the rest of the batch goes again, in
    // order, with the scripts loaded ahead (sendBatch, the cache now forgotten):
    // the refused scripts and every plain command after the first of them (hint
    // and wake-up writes, indexes: idempotent). A script that did run is not
    // sent twice.
    knownScripts(client).clear()
    const again: number[] = []
    for (let i = first; i < ops.length; i++) if (!('script' in (ops[i] as Op)) || noScript(i)) again.push(i)
    const redo = await sendBatch(client, again.map((i) => ops[i] as Op))
    again.forEach((i, j) => {
      res[i] = redo[j] ?? [new Error('no reply'), null]
    })
  }
  const out: OpResult[] = []
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i] as Op
    const [err, val] = res[i] ?? [new Error('no reply'), null]
    if (err && 'script' in op && err.message.startsWith('NOSCRIPT')) {
      // Flushed again between the load and the call: run it on its own.
      knownScripts(client).clear()
      out.push(await runScript(client, op.script, op.keys, op.args).then((v): OpResult => [null, v], (e: unknown): OpResult => [asError(e), null]))
    } else {
      out.push(err ? [asError(err), null] : [null, val])
    }
  }
  return out
}

/**
 * Sends `ops` to a single Redis in one socket write, as a pipeline does, and
 * answers each op's outcome in order. Not ioredis's Pipeline: its objects got
 * much of what a batch touched promoted to the old generation (in a loop of
 * two-script batches, 75 MB of 935 MB allocated, against 8 MB sent this way;
 * docs/benchmarks.md, 2026-12-06). ioredis's own commands and queue are used
 * as they are: every command is queued for its reply in order and its bytes
 * join one write, or, when the connection is not ready, wait in ioredis's
 * offline queue. Commands ioredis resends after a reconnect come through
 * `write` one at a time, in queue order, and go out at once; as with a
 * Pipeline, that is a batch none of whose replies had arrived, and the
 * unanswered rest of a batch cut off midway fails with an AbortError.
 */
/** Scripts each connection's server is known to have, forgotten when the connection closes (a restarted server has none). */
const loadedOn = new WeakMap<Redis, Set<string>>()

function knownScripts(client: Redis): Set<string> {
  let known = loadedOn.get(client)
  if (!known) {
    const fresh = new Set<string>()
    client.on('close', () => fresh.clear())
    loadedOn.set(client, fresh)
    known = fresh
  }
  return known
}

function sendBatch(client: Redis, ops: readonly Op[]): Promise<OpResult[]> {
  let pending: (string | Buffer)[] | null = []
  const stream: PipelineWriteableStream = {
    isPipeline: true,
    destination: { redis: client },
    write(data: string | Buffer) {
      if (pending) pending.push(data)
      else client.stream.write(data)
    },
  }
  const opts = { replyEncoding: 'utf8' as const, keyPrefix: client.options.keyPrefix }
  // A script this connection's server may not have goes first as SCRIPT LOAD,
  // in the same write: answered NOSCRIPT, it would run only after the rest of
  // its batch (execOps), out of the order the batch was written in. Counted as
  // loaded from here on: later batches on this connection run after the load.
  const known = knownScripts(client)
  const loads: Command[] = []
  for (const op of ops) {
    if (!('script' in op)) continue
    const s = scriptFor(op.script)
    if (known.has(s.sha)) continue
    known.add(s.sha)
    loads.push(new Command('script', ['LOAD', s.source], opts))
  }
  const commands = ops.map((op) => new Command('script' in op ? 'evalsha' : op.cmd, 'script' in op ? evalshaArgs(op.script, op.keys, op.args) : op.args, opts))
  // A failed load shows as NOSCRIPT on its script's call, handled there.
  for (const c of loads) c.promise.catch(() => undefined)
  try {
    ;[...loads, ...commands].forEach((c, i) => {
      // As in a Pipeline: when the connection drops after some of a batch's
      // replies, ioredis fails the rest (AbortError) instead of resending them.
      c.pipelineIndex = i
      void client.sendCommand(c, stream)
    })
  } finally {
    // Always: a command ioredis queued for a reply whose bytes never went out
    // would take the next command's reply.
    const data = pending
    pending = null
    writeAll(client.stream, data)
  }
  return Promise.all(commands.map((c) => c.promise.then((v): OpResult => [null, v], (e: unknown): OpResult => [e instanceof Error ? e : new Error(String(e)), null])))
}

/** One write of a batch's pieces; a batch too long for one string goes out as corked writes (one writev). */
function writeAll(socket: Redis['stream'], pieces: readonly (string | Buffer)[]): void {
  if (pieces.length === 0) return
  let chars = 0
  for (const p of pieces) chars += typeof p === 'string' ? p.length : constants.MAX_STRING_LENGTH
  if (chars < constants.MAX_STRING_LENGTH) {
    socket.write(pieces.join(''))
    return
  }
  socket.cork()
  for (const p of pieces) socket.write(p)
  socket.uncork()
}

/**
 * Runs ops in phases, each landing only after the one before it: on a single
 * Redis one pipeline, whose order gives that for free (no extra round trip); on a
 * Cluster one {@link execOps} per phase, awaited in turn. Results come back flat,
 * in the order of the ops.
 */
export async function execPhases(client: RedisClient, phases: readonly (readonly Op[])[]): Promise<OpResult[]> {
  if (!isCluster(client)) return await execOps(client, phases.flat())
  const out: OpResult[] = []
  for (const phase of phases) out.push(...(await execOps(client, phase)))
  return out
}

/** The replies of a batch, or the first error in it thrown. */
export function throwFirst(res: readonly OpResult[]): unknown[] {
  for (const [err] of res) if (err) throw err
  return res.map(([, v]) => v)
}

/** Like {@link execOps}, but throws the first error. */
export async function execAll(client: RedisClient, ops: readonly Op[]): Promise<unknown[]> {
  return throwFirst(await execOps(client, ops))
}
