-- range_ids: the ids of a stream's entries in a range, without their fields.
-- The persister splits a pointer Neo4j refused event by event, and one of its
-- events may be megabytes: only the ids need to travel.
--
-- KEYS: 1 workflow:events:{wf}
-- ARGV: 1 first id  2 last id (both included)
-- Returns: the ids, in stream order
local out = {}
for i, e in ipairs(redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2])) do out[i] = e[1] end
return out
