-- takeover: turns a freshly acquired leader lock into a leadership term. Checks
-- that the Redlock value is still ours, bumps the fenced term (every write of a
-- leader is checked against it, so a deposed leader cannot act), records who
-- leads and announces it.
--
-- KEYS: 1 system:leader (the Redlock resource)  2 system:leader:term  3 system:leader:info
-- ARGV: 1 lock value  2 serviceId  3 info TTL ms  4 system channel  5 service-discovery URL or ''
-- Returns: the new term
-- Errors: TROUPE_NOTLEADER the lock is not (or no longer) ours
local lock_key, term_key, info_key = KEYS[1], KEYS[2], KEYS[3]
local lock_value, service, ttl, channel, sd_url = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
if redis.call('GET', lock_key) ~= lock_value then
  return redis.error_reply('TROUPE_NOTLEADER the leader lock is not held by ' .. service)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local term = redis.call('INCR', term_key)
redis.call('DEL', info_key)
redis.call('HSET', info_key, 'serviceId', service, 'term', term, 'since', now, 'renewedAt', now, 'sdUrl', sd_url)
redis.call('PEXPIRE', info_key, ttl)
redis.call('PUBLISH', channel, cjson.encode({ type = 'system.leader.elected', at = now, term = term, leader = service }))
return term
