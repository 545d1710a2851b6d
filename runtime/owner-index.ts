// An owner's index (`workflow:owner:<owner>`, a ZSET of workflow ids by
// creation time) loses ids whose workflows are gone: a start prunes it
// (client.ts) and the gateway's listing drops the ones it meets. Both decide
// from a read made before their ZREM, so both go through here.
import { execOps } from './redis/batch.ts'
import type { RedisClient } from './redis/connection.ts'
import type { Keys } from './redis/keys.ts'

/**
 * Removes `gone` from `owner`'s index, then puts back each of them that was
 * started again meanwhile under the same owner, at its status's `createdAt`.
 *
 * A caller-chosen id can be started again once its keys expired: one started
 * between the caller's read (which found it gone) and the ZREM had its new
 * entry removed with the old, and the running workflow was missing from its
 * owner's list for good. Its status is written before that entry, so the
 * HMGET here, sent after the ZREM's reply, sees it; `ZADD NX` leaves an entry
 * its start wrote since as it is. An id another owner started again is not
 * this owner's and stays out. One ZREM, one HMGET per removed id (other slots
 * on a Cluster: execOps sends each to its node), one ZADD when any came back.
 * A failed HMGET leaves its id out; a failed ZREM or ZADD rejects.
 */
export async function dropFromOwnerIndex(redis: RedisClient, keys: Keys, owner: string, gone: readonly string[]): Promise<void> {
  if (gone.length === 0) return
  const key = keys.byOwner(owner)
  await redis.zrem(key, ...gone)
  const back = await execOps(redis, gone.map((id) => ({ cmd: 'hmget', args: [keys.status(id), 'owner', 'createdAt'] })))
  const again = gone.flatMap((id, i) => {
    const [err, v] = back[i] ?? [new Error('no reply'), null]
    const [by, at] = err ? [] : (v as (string | null)[])
    return by === owner && at ? [Number(at), id] : []
  })
  if (again.length > 0) await redis.zadd(key, 'NX', ...again)
}
