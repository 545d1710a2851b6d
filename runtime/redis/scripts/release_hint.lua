-- release_hint: after an actor went idle, removes its run-queue member (or moves it
-- to the time its next delayed action comes due), but only if the score is still
-- the lease we set and that lease has not run out. Any other score means someone
-- wrote the hint while we held the actor (an enqueue, a commit's send, a process
-- that bounced off our lock and pushed it to our lock's end): it may cover work we
-- did not claim, so it is left due now (ZADD LT: never later than it was) for a
-- second look. An expired lease may have been overtaken unseen: left as it is.
--
-- KEYS: 1 agent:ready:<agent>
-- ARGV: 1 wf  2 our lease score  3 next due score or '' (none)
--       4 a lease this process took for a rerun of the actor, or '': left as it is
-- Returns: 1 when the hint was changed by us, 0 when it was left for a second look
local ready = KEYS[1]
local wf, lease, nxt, rerun = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local cur = redis.call('ZSCORE', ready, wf)
local now = now_ms()
if not cur or tonumber(cur) == rerun then return 0 end
if tonumber(cur) ~= lease or lease <= now then
  redis.call('ZADD', ready, 'LT', now, wf)
  return 0
end
if nxt ~= '' then
  redis.call('ZADD', ready, nxt, wf)
else
  redis.call('ZREM', ready, wf)
end
return 1
