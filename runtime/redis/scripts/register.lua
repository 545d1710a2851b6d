-- register: writes this runtime's agent registrations into system:agents, but
-- leaves alone one a newer version of the agent wrote recently. During a
-- rolling update old and new processes both refresh every 10 s; a plain HSET
-- made the registry flip between the versions, so clients refused the new
-- version's action types most of the time and old processes, reading it, could
-- not tell that a newer version was running (they hand back the types only it
-- handles). The newest live version's registration stands until it has not been
-- refreshed for `hold` ms (its processes are gone: a rollback), then older ones
-- write again.
--
-- KEYS: 1 system:agents
-- ARGV: 1 TTL of the hash (ms)  2 hold (ms)  then, per agent: name, version, registration JSON
-- Returns: the names left alone (a newer version's registration stands)
local now = now_ms()
local hold = tonumber(ARGV[2])
local kept = {}
for i = 3, #ARGV, 3 do
  local name, version, json = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local ok, cur = pcall(cjson.decode, redis.call('HGET', KEYS[1], name) or '')
  local newer = ok and type(cur) == 'table' and tonumber(cur.version) and tonumber(cur.version) > version
    and tonumber(cur.updatedAt) and now - tonumber(cur.updatedAt) < hold
  if newer then
    kept[#kept + 1] = name
  else
    redis.call('HSET', KEYS[1], name, json)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return kept
