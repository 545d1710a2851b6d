// The Neo4j driver as the persister uses it, and the one place that decides what
// a failed write means: wait and retry the same batch (Neo4j unreachable, busy,
// deadlocked), or split the batch to find and park the entry that cannot be
// written (its data is refused).
import neo4j, { type Driver } from 'neo4j-driver'
import { redactUrl } from '../config.ts'
import { TroupeError } from '../errors.ts'
import type { ResolvedPersisterOptions } from './options.ts'

/**
 * Creates a driver for `o.neo4jUri`. The driver's own retry of a managed
 * transaction is kept short: while Neo4j is down the persister's state machine
 * backs off instead, so the outage is visible in its state and metrics.
 *
 * @example
 * ```ts
 * const driver = createNeo4jDriver(resolvePersisterOptions())
 * ```
 */
export function createNeo4jDriver(o: Pick<ResolvedPersisterOptions, 'neo4jUri' | 'neo4jUser' | 'neo4jPassword'>): Driver {
  const auth = o.neo4jPassword ? neo4j.auth.basic(o.neo4jUser, o.neo4jPassword) : undefined
  try {
    return neo4j.driver(o.neo4jUri, auth, {
      connectionTimeout: 5000,
      connectionAcquisitionTimeout: 10_000,
      maxTransactionRetryTime: 3000,
      maxConnectionPoolSize: 20,
      disableLosslessIntegers: false,
      logging: { level: 'error', logger: () => undefined },
    })
  } catch (err) {
    // The driver's own words ("Illegal host") name neither the setting nor the value.
    throw new TroupeError('config', `the Neo4j URI ${JSON.stringify(redactUrl(o.neo4jUri))} (NEO4J_URI or --neo4j-uri) is not usable: ${err instanceof Error ? err.message.trim() : String(err)}`)
  }
}

/** Neo4j error codes that say "this data cannot be written", whatever the retry. */
const DATA_ERRORS = [
  'Neo.ClientError.Statement.TypeError',
  'Neo.ClientError.Statement.ArgumentError',
  'Neo.ClientError.Statement.ArithmeticError',
  'Neo.ClientError.Statement.ConstraintVerificationFailed',
  'Neo.ClientError.Schema.ConstraintValidationFailed',
  'Neo.ClientError.Request.Invalid',
  // One transaction over db.memory.transaction.max: a smaller one passes.
  'Neo.ClientError.General.TransactionOutOfMemoryError',
  'Neo.TransientError.General.TransactionMemoryLimit',
  // The shared transaction pool full (see isPoolError: parked only after retries).
  'Neo.TransientError.General.MemoryPoolOutOfMemoryError',
]

/** The code of a Neo4j error ('' for other errors). */
export function neo4jCode(err: unknown): string {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : ''
}

/**
 * True when `err` is caused by the rows themselves (a value Neo4j refuses, a
 * transaction too big for its memory): retrying the same batch cannot help, but
 * splitting it can. Everything else (unreachable, timeouts, deadlocks, our own
 * Cypher errors) is retried after a backoff, so nothing is ever dropped because
 * of an outage or a bug.
 */
// Exact codes only: Neo.TransientError.General.OutOfMemoryError is the server's
// heap running out, an outage like any other, and was taken for a data error by
// a match on "memory" (every batch split and parked while it lasted).
export function isDataError(err: unknown): boolean {
  const code = neo4jCode(err)
  return DATA_ERRORS.some((c) => code === c || code.startsWith(`${c}.`))
}

/**
 * True when Neo4j refused for want of memory shared by every transaction (its
 * pool was full at that moment): a smaller batch may pass, and so may the same
 * one a little later. Unlike the per-transaction limit, it says nothing about
 * the rows alone.
 */
export function isPoolError(err: unknown): boolean {
  return neo4jCode(err).startsWith('Neo.TransientError.General.MemoryPoolOutOfMemoryError')
}

/** True for errors raised by the Neo4j driver (as opposed to Redis or our own code). */
export function isNeo4jError(err: unknown): boolean {
  return err instanceof neo4j.Neo4jError
}

/** A short description of a Neo4j or Redis error for logs and parked entries. */
export function describeError(err: unknown): string {
  const code = neo4jCode(err)
  const msg = err instanceof Error ? err.message : String(err)
  return (code ? `${code}: ${msg}` : msg).slice(0, 500)
}

/** True when Neo4j answers (used by readiness checks). */
export async function neo4jReachable(driver: Driver, database: string | undefined): Promise<boolean> {
  try {
    await driver.getServerInfo(database ? { database } : {})
    return true
  } catch {
    return false
  }
}
