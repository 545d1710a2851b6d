-- claim_deadlines: takes up to N passed deadlines and leases each (moves its score
-- to now + lease) before the leader fails the workflow. If the leader dies between
-- the claim and the cancel, the entry simply comes due again for its successor;
-- the cancel script itself refuses a second ending (TROUPE_ENDED), so the deadline
-- fires exactly once.
--
-- KEYS: 1 system:leader:term  2 system:deadlines
-- ARGV: 1 term  2 max count  3 lease ms
-- Returns: { wf1, due1, wf2, due2, ... } (due = the score the entry had)
-- Errors: TROUPE_DEPOSED the term is no longer current
local term_key, deadlines = KEYS[1], KEYS[2]
local term, n, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('GET', term_key) ~= term then
  return redis.error_reply('TROUPE_DEPOSED term ' .. term .. ' is over')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'WITHSCORES', 'LIMIT', 0, n)
local out = {}
for i = 1, #due, 2 do
  redis.call('ZADD', deadlines, now + lease, due[i])
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
end
return out
