-- extend_hint: moves our lease on an actor's ready hint to now + ms, but only
-- while the score is still the lease we set. Any other score is someone else's
-- due time (an enqueue or a commit sent work meanwhile, or the holder's release
-- left it due): it stays, and whoever looks next sees it. A plain ZADD could
-- land after such a write and turn the due hint back into a lease we then delete
-- (the lock extender on a Cluster, where nothing orders it against a commit on
-- another node), or push it to the end of a lock the holder has since released
-- (a pick that found the actor busy and whose reply was handled late).
-- Two callers: the lock extender passes a lease (ms with a fraction, see
-- leaseMs in runtime/claims.ts); a busy pick passes whole ms to the end of the
-- holder's lock, which makes the score a due time, not a lease.
--
-- KEYS: 1 agent:ready:<agent>
-- ARGV: 1 wf  2 our current lease score  3 ms from now
-- Returns: the new score, or '' when the hint was left alone
local ready, wf = KEYS[1], ARGV[1]
local cur = redis.call('ZSCORE', ready, wf)
if not cur or tonumber(cur) ~= tonumber(ARGV[2]) then return '' end
local until_ms = now_ms() + tonumber(ARGV[3])
redis.call('ZADD', ready, until_ms, wf)
return score_str(until_ms)
