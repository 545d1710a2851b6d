-- mark_dead: marks a service dead after missed heartbeats, unless it heartbeated
-- (or stopped) since the leader looked: the check and the write are one step, so
-- a slow heartbeat racing the scan never turns a live service dead. Keeps the
-- record for a while (for `troupe status`) and announces the death.
-- A service whose record already expired (it died while no leader was watching,
-- e.g. during a failover; the caller only asks for recent ones) gets a tombstone
-- record instead, if its index entry still shows the same last-seen time, so it
-- is announced once too.
--
-- KEYS: 1 system:leader:term  2 system:health:<serviceId>  3 system:services
-- ARGV: 1 term  2 lastSeen the leader saw  3 keep ms  4 system channel  5 serviceId
--       6 leader serviceId  7 missed heartbeats
-- Returns: 1 when marked dead, 0 when left alone
-- Errors: TROUPE_DEPOSED the term is no longer current
local term_key, health, services = KEYS[1], KEYS[2], KEYS[3]
local term, seen, keep, channel, service, leader, missed = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
if redis.call('GET', term_key) ~= term then
  return redis.error_reply('TROUPE_DEPOSED term ' .. term .. ' is over')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reason = 'missed heartbeats'
local h
if redis.call('EXISTS', health) == 1 then
  h = redis.call('HMGET', health, 'status', 'lastSeen', 'roles', 'agents', 'host', 'pid')
  if h[1] ~= 'alive' or h[2] ~= seen then return 0 end
  redis.call('HSET', health, 'status', 'dead', 'deadAt', now, 'deadTerm', term)
else
  local score = redis.call('ZSCORE', services, service)
  if not score or tonumber(score) ~= tonumber(seen) then return 0 end
  h = { 'dead', seen, '', '', '', '' }
  reason = 'health record expired'
  redis.call('HSET', health, 'serviceId', service, 'status', 'dead', 'lastSeen', seen, 'deadAt', now, 'deadTerm', term,
    'note', 'health record expired before the supervisor saw it')
end
redis.call('PEXPIRE', health, keep)
redis.call('PUBLISH', channel, cjson.encode({
  type = 'system.service.dead', at = now, term = tonumber(term), leader = leader, serviceId = service, reason = reason,
  lastSeen = tonumber(seen), missedHeartbeats = missed, roles = h[3] or '', agents = h[4] or '', host = h[5] or '', pid = h[6] or '',
}))
return 1
