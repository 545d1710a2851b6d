-- expire_persisted: puts the retention TTL on every key of a finished workflow,
-- but only if its stream is exactly as the persister verified it in Neo4j (same
-- length, same last id) and the workflow is still finished. Checked and applied
-- atomically, so an event appended after the check (an agent still streaming when
-- the workflow was cancelled) keeps its stream from expiring unpersisted.
--
-- KEYS: 1 workflow:events  2 workflow:status  3.. the workflow's other keys
--       (actions, seq, dead, actor:<agent>..., queue:<agent>...)
-- ARGV: 1 ttl ms  2 expected stream length  3 expected last stream id
-- Returns: 1 when the TTL was set, 0 when the stream or status changed meanwhile
local TERMINAL = { completed = true, failed = true, cancelled = true }
local status = redis.call('HGET', KEYS[2], 'status')
if not status or not TERMINAL[status] then return 0 end
if redis.call('XLEN', KEYS[1]) ~= tonumber(ARGV[2]) then return 0 end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if not last[1] or last[1][1] ~= ARGV[3] then return 0 end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 1
