-- release_hint: after an actor went idle, removes its run-queue member (or moves it
-- to the time its next delayed action comes due), but only if the score is still
-- the lease we set and that lease has not run out. Any other score means an
-- enqueue raced us and someone must look again; an expired lease may have been
-- overtaken unseen, so a due hint is left for a harmless second look.
--
-- KEYS: 1 agent:ready:<agent>
-- ARGV: 1 wf  2 our lease score  3 next due score or '' (none)
-- Returns: 1 when the hint was changed by us, 0 when it was left alone
local ready = KEYS[1]
local wf, lease, nxt = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local cur = redis.call('ZSCORE', ready, wf)
if not cur or tonumber(cur) ~= lease or lease <= now_ms() then return 0 end
if nxt ~= '' then
  redis.call('ZADD', ready, nxt, wf)
else
  redis.call('ZREM', ready, wf)
end
return 1
