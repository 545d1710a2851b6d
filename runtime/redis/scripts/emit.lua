-- emit: appends pre-encoded WorkflowEvents to the workflow stream and publishes
-- each live, in order. Used for events agent code emits while it works, so they
-- reach watchers before the action commits.
--
-- KEYS: 1 workflow:events
-- ARGV: 1 channel  2 stream maxlen (0 = no trim)  3.. event JSON, one per argument
-- Returns: { firstStreamId, lastStreamId }
local first, last
for i = 3, #ARGV do
  last = append_event(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[i])
  first = first or last
end
return { first or '', last or '' }
