-- pick: takes up to N due members of an agent's run queue and leases each (sets its
-- score to now + lease), so other processes skip it while this one tries the lock.
--
-- KEYS: 1 agent:ready:<agent>
-- ARGV: 1 max count  2 lease ms
-- Returns: { wf1, lease1, wf2, lease2, ..., nextDue } where nextDue is the earliest
--          score still in the queue after the picks ('' when empty), so an idle
--          worker knows how long it may sleep.
local ready = KEYS[1]
local n, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local out = {}
if n > 0 then
  local due = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, n)
  local until_ms = now + lease
  for _, wf in ipairs(due) do
    redis.call('ZADD', ready, until_ms, wf)
    out[#out + 1] = wf
    out[#out + 1] = score_str(until_ms)
  end
end
local first = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
out[#out + 1] = first[2] or ''
out[#out + 1] = tostring(now)
return out
