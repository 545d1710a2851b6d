-- emit: appends pre-encoded WorkflowEvents to the workflow stream and publishes
-- each live, in order. Used for events agent code emits while it works, so they
-- reach watchers before the action commits; also records the agent's current state
-- when it changed meanwhile, so status reads show it live.
--
-- KEYS: 1 workflow:events  2 workflow:status
-- ARGV: 1 channel  2 stream maxlen (0 = no trim)  3 status field ('' = none, e.g. 'agent:writer')
--       4 state value JSON  5.. event JSON, one per argument
-- Returns: { firstStreamId, lastStreamId }, both '' when nothing was appended
--          (the workflow has ended or is gone: its final event stays the last one,
--          and no stream is left behind without the workflow's retention)
local st = redis.call('HGET', KEYS[2], 'status')
if not st or TERMINAL[st] then return { '', '' } end
local first, last
for i = 5, #ARGV do
  last = append_event(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[i])
  first = first or last
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
return { first or '', last or '' }
