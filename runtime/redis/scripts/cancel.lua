-- cancel: ends a workflow as cancelled (or failed, for deadlines): drops every
-- queued action of the named agents' mailboxes and appends the final event. Actions
-- in flight are aborted by their holders, told over the control channel by the
-- caller; their commits then find the workflow ended and change nothing.
--
-- KEYS: 1 workflow:status  2 workflow:actions  3 workflow:events  4 workflow:seq
--       5 workflow:dead  6.. for each agent of the workflow: its mailbox, its actor
-- ARGV: 1 wf  2 final status ('cancelled' | 'failed')  3 reason  4 event id  5 channel
--       6 stream maxlen  7 retention ms (0 = none)
-- Returns: { dropped count, streamId }
-- Errors: TROUPE_NOWF no such workflow | TROUPE_ENDED already ended
local status_key, actions_key, events_key = KEYS[1], KEYS[2], KEYS[3]
local wf, final, reason, event_id, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxlen, retention = tonumber(ARGV[6]), tonumber(ARGV[7])
local status = redis.call('HGET', status_key, 'status')
if not status then return redis.error_reply('TROUPE_NOWF no workflow ' .. wf) end
if TERMINAL[status] then return redis.error_reply('TROUPE_ENDED workflow ' .. wf .. ' is ' .. status) end
local now = now_ms()
local dropped = 0
for i = 6, #KEYS, 2 do dropped = dropped + drop_mailbox(KEYS[i], actions_key) end
redis.call('HSET', status_key, 'status', final, 'error', reason, 'updatedAt', now, 'endedAt', now, 'queued', 0)
local sid = append_event(events_key, channel, maxlen, make_event(event_id, wf, 'workflow.' .. final,
  { reason = reason, dropped = dropped }, '', '', 0, '', now))
-- Without a persister nothing else expires them: every key of the workflow gets the
-- retention TTL here (a mailbox just dropped is gone already; PEXPIRE skips it).
if retention > 0 then
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], retention) end
end
return { dropped, sid }
