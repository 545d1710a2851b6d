-- requeue: sends a workflow's dead-lettered actions (all, or the ids given) back
-- to their agents' mailboxes as fresh deliveries: attempt 0, due now, a new place
-- at the end of the line (a new seq), as if just sent. The record (payload, type,
-- agent) is the one the action was sent with; its old state's error goes along
-- as `requeuedFrom` for the record, and `action.requeued` tells the stream.
--
-- An id that is not dead-lettered here (never was, or requeued already) is
-- skipped, not refused, so a requeue run again changes nothing; so is one whose
-- record cannot be sent (written by hand without an agent), which stays dead.
--
-- The mailboxes are key 6 with the agent name appended (same {wf} slot, as in
-- cancel.lua). The agents' ready hints and wake-ups live in other slots: the
-- caller writes a hint for each of the workflow's agents before this script
-- (as an enqueue's pre-hint: a caller that dies after it leaves nothing
-- stranded) and the hints and wake-ups of those that got work after it.
--
-- A call's reply can be lost and ioredis then sends it again: key 7 keeps the
-- last call's event id base and its answer for ten minutes, and a
-- call with that base answers it again instead of taking the next dead
-- letters under the same event ids (the first run's actions are no longer
-- dead, so it would have reported them as skipped and left its caller without
-- the agents to hint).
--
-- KEYS: 1 workflow:status  2 workflow:actions  3 workflow:events  4 workflow:seq
--       5 workflow:dead  6 the mailbox key for agent ''  7 workflow:requeued (the last call's answer)
-- ARGV: 1 wf  2 event id base  3 channel  4 stream maxlen (0 = no trim)
--       5 'all' | 'listed'  6 'all': the cutoff score ('' = now; only those dead by then, so an
--       action that dies again during a long requeue is not taken twice)  7 'all': how many of
--       those to pass over (the ones an earlier call of the same requeue could not send, which
--       stay dead at the head)  8... 'listed': the action ids
--       'all' takes at most ALL_BATCH a call; the caller calls again while a call examines that many.
-- Returns: { now ms, firstStreamId, lastStreamId, cutoff, examined, n requeued, id..., n skipped, id..., agent... }
--          with the stream ids '' when nothing was requeued, and the agents whose mailboxes got work
-- Errors: TROUPE_NOWF no such workflow | TROUPE_ENDED workflow already ended
local status_key, actions_key, events_key, seq_key, dead_key, mailbox_base, marker_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
-- Long enough for any resend (ioredis resends on reconnect), short enough not to linger.
local MARKER_TTL_MS = 600000
local wf, ev_base, channel, maxlen = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])

local counts = redis.call('HMGET', status_key, 'status', 'queued', 'dead')
local status = counts[1]
if not status then return redis.error_reply('TROUPE_NOWF no workflow ' .. wf) end
local marker = redis.call('GET', marker_key)
if marker and string.sub(marker, 1, #ev_base + 1) == ev_base .. ' ' then
  return cjson.decode(string.sub(marker, #ev_base + 2))
end
-- Nothing runs in an ended workflow: its mailboxes are gone with their hints.
if TERMINAL[status] then return redis.error_reply('TROUPE_ENDED workflow ' .. wf .. ' is ' .. status) end
local now, now_s = now_pair()

-- A batch per call in 'all' mode: after an outage a workflow can hold
-- thousands of dead letters, and one call for all of them held Redis for
-- seconds. Keep in step with REQUEUE_BATCH in client.ts.
local ALL_BATCH = 500
local ids = {}
local cutoff = ''
if ARGV[5] == 'all' then
  cutoff = ARGV[6]
  if cutoff == '' then cutoff = now_s end
  ids = redis.call('ZRANGEBYSCORE', dead_key, '-inf', cutoff, 'LIMIT', tonumber(ARGV[7]) or 0, ALL_BATCH)
else
  for i = 8, #ARGV do ids[#ids + 1] = ARGV[i] end
end

local requeued, skipped, agents, listed = {}, {}, {}, {}
local first_sid, last_sid = '', ''
for _, id in ipairs(ids) do
  local got = redis.call('HMGET', actions_key, id, id .. ':st')
  local rok, rec = pcall(cjson.decode, got[1] or '')
  -- Not dead here, or a record without an agent to send it to (written by hand):
  -- left as it is.
  if not redis.call('ZSCORE', dead_key, id) or not rok or type(rec) ~= 'table' or type(rec.agent) ~= 'string' or rec.agent == '' then
    skipped[#skipped + 1] = id
  else
    local agent = rec.agent
    local sok, old = pcall(cjson.decode, got[2] or '')
    if not sok or type(old) ~= 'table' then old = {} end
    local seq = redis.call('INCR', seq_key)
    local member = member_of(seq, id)
    local from = { error = old.error, finishedAt = old.finishedAt, attempt = old.attempt }
    redis.call('HSET', actions_key, id .. ':st', '{"status":"queued","attempt":0,"seq":' .. int(seq) .. ',"availableAt":' .. now_s ..
      ',"requeuedFrom":' .. cjson.encode(from) .. '}')
    redis.call('ZADD', mailbox_base .. agent, now_s, member)
    redis.call('ZREM', dead_key, id)
    if not listed[agent] then
      listed[agent] = true
      agents[#agents + 1] = agent
      redis.call('HSETNX', status_key, 'agent:' .. agent, '')
    end
    requeued[#requeued + 1] = id
    local content = '{"actionId":' .. cjson.encode(id) .. ',"agent":' .. cjson.encode(agent) ..
      ',"type":' .. cjson.encode(tostring(rec.type or '')) .. ',"availableAt":' .. now_s ..
      ',"previous":' .. cjson.encode(from) .. '}'
    last_sid = append_event(events_key, channel, maxlen, event_json(ev_base .. '.' .. int(#requeued), wf, 'action.requeued',
      content, agent, id, 0, type(rec.eventId) == 'string' and rec.eventId or '', now_s))
    if first_sid == '' then first_sid = last_sid end
  end
end

if #requeued > 0 then
  local n = #requeued
  -- A counter a hand edit left unreadable counts from 0 (as commit.lua reads them).
  local queued = (tonumber(counts[2]) or 0) + n
  local dead = math.max(0, (tonumber(counts[3]) or 0) - n)
  redis.call('HSET', status_key, 'queued', int(queued), 'dead', int(dead), 'updatedAt', now_s)
  local changed = settle_status(status_key, now_s, status, queued)
  if changed then
    last_sid = append_event(events_key, channel, maxlen,
      event_json(ev_base .. '.s', wf, 'workflow.status', '{"status":"' .. changed .. '"}', '', '', 0, '', now_s))
  end
end

local out = { now_s, first_sid, last_sid, cutoff, #ids, #requeued }
for _, id in ipairs(requeued) do out[#out + 1] = id end
out[#out + 1] = #skipped
for _, id in ipairs(skipped) do out[#out + 1] = id end
for _, agent in ipairs(agents) do out[#out + 1] = agent end
redis.call('SET', marker_key, ev_base .. ' ' .. cjson.encode(out), 'PX', MARKER_TTL_MS)
return out
