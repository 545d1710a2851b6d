-- cancel: ends a workflow as cancelled (or failed, for deadlines): drops every
-- queued action of every agent's mailbox and appends the final event. Actions in
-- flight are aborted by their holders, told over the control channel by the
-- caller; their commits then find the workflow ended and change nothing.
--
-- The agents are read here, from the status hash, not passed in: a list the
-- caller read first would miss an agent whose first action was queued between
-- that read and this script, and leave its mailbox behind (queued, and without a
-- TTL when there is no persister). Their mailbox, actor and lock keys are the
-- template keys 6 to 8 with the agent name appended (same {wf} slot; keys.ts
-- builds them).
--
-- The ready hints of actors nobody holds go too (which ones: unheld_agents in
-- lib.lua): with their mailboxes dropped they only wait for their due time, up
-- to ten years away for a delayed action. On a single Redis they are removed
-- here (the ready key template in ARGV 8, keys of other slots, as
-- pick_activate.lua builds them); a Cluster keeps them in other slots, so the
-- caller removes those this script returns.
--
-- KEYS: 1 workflow:status  2 workflow:actions  3 workflow:events  4 workflow:seq
--       5 workflow:dead  6 the mailbox key for agent ''  7 the actor key for agent ''
--       8 the lock key for agent ''
-- ARGV: 1 wf  2 final status ('cancelled' | 'failed')  3 reason  4 event id  5 channel
--       6 stream maxlen  7 retention ms (0 = none)  8 the ready key for agent '' (single
--       Redis), or '' (Cluster: the hints are left to the caller)
-- Returns: { dropped count, streamId, agent... } with the agents whose hints are to go
-- Errors: TROUPE_NOWF no such workflow | TROUPE_ENDED already ended
local status_key, actions_key, events_key = KEYS[1], KEYS[2], KEYS[3]
local mailbox_base, actor_base, lock_base = KEYS[6], KEYS[7], KEYS[8]
local wf, final, reason, event_id, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxlen, retention, ready_base = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8] or ''
local status = redis.call('HGET', status_key, 'status')
if not status then return redis.error_reply('TROUPE_NOWF no workflow ' .. wf) end
if TERMINAL[status] then return redis.error_reply('TROUPE_ENDED workflow ' .. wf .. ' is ' .. status) end
local now = now_ms()
local dropped = drop_mailboxes(status_key, mailbox_base, '', actions_key)
redis.call('HSET', status_key, 'status', final, 'error', reason, 'updatedAt', now, 'endedAt', now, 'queued', 0)
local sid = append_event(events_key, channel, maxlen, make_event(event_id, wf, 'workflow.' .. final,
  { reason = reason, dropped = dropped }, '', '', 0, '', now))
-- Without a persister nothing else expires them: every key of the workflow gets the
-- retention TTL here (the mailboxes just dropped are gone already).
if retention > 0 then
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], retention) end
  expire_agents(status_key, actor_base, mailbox_base, '', retention)
end
local unhint = unheld_agents(status_key, actor_base, lock_base)
if ready_base ~= '' then drop_ready_hints(ready_base, wf, unhint) end
local out = { dropped, sid }
for _, name in ipairs(unhint) do out[#out + 1] = name end
return out
