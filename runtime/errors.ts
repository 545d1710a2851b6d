// One error class for everything Troupe reports on purpose; `code` is stable and
// maps to CLI exit messages and HTTP problem types.

/** Stable error codes. Scripts raise the `TROUPE_*` ones; see runtime/redis/scripts/*.lua headers. */
export type TroupeErrorCode =
  | 'bad_id'
  | 'bad_agent'
  | 'bad_type'
  | 'bad_payload'
  | 'payload_too_large'
  | 'unknown_agent'
  | 'unknown_action'
  | 'workflow_exists'
  | 'workflow_not_found'
  | 'workflow_ended'
  | 'duplicate_action'
  | 'fence_rejected'
  | 'stale_action'
  | 'not_locked'
  | 'redis_oom'
  | 'eviction_policy'
  | 'config'

/** An expected failure with a stable `code`, a readable message and an optional cause. */
export class TroupeError extends Error {
  constructor(
    readonly code: TroupeErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
    this.name = 'TroupeError'
  }
}

const SCRIPT_CODES: Record<string, TroupeErrorCode> = {
  TROUPE_EXISTS: 'workflow_exists',
  TROUPE_NOWF: 'workflow_not_found',
  TROUPE_ENDED: 'workflow_ended',
  TROUPE_DUP: 'duplicate_action',
  TROUPE_FENCE: 'fence_rejected',
  TROUPE_STALE: 'stale_action',
  TROUPE_NOTLOCKED: 'not_locked',
}

/** Maps a Redis reply error from one of our scripts (or an OOM) to a TroupeError; other errors pass through. */
export function fromRedisError(err: unknown): unknown {
  if (!(err instanceof Error)) return err
  const m = /(TROUPE_[A-Z]+) (.*)$/s.exec(err.message)
  if (m?.[1] && m[2] !== undefined) {
    const code = SCRIPT_CODES[m[1]]
    if (code) return new TroupeError(code, m[2].replace(/ script: .*$/s, ''), { cause: err })
  }
  if (err.message.startsWith('OOM')) {
    return new TroupeError('redis_oom', 'Redis is out of memory (maxmemory reached with noeviction): nothing was written; free memory or raise maxmemory', { cause: err })
  }
  return err
}
