-- enqueue: stores one action, adds it to its actor's mailbox, updates the workflow
-- status and appends + publishes action.enqueued (and workflow.started on start).
-- The ready hint (a global key) is set by the caller before and after this script:
-- in the same pipeline on a single Redis, after its reply on a Cluster
-- (runtime/claims.ts enqueueMany).
--
-- KEYS: 1 workflow:status  2 workflow:actions  3 workflow:seq  4 workflow:events
--       5 workflow:queue:<agent> (mailbox)
-- ARGV: 1 wf  2 actionId  3 agent  4 type  5 record JSON (immutable part, built by the client)
--       6 delayMs  7 eventId (action.enqueued)  8 parent event id or ''  9 channel
--       10 mode: 'start' | 'send'  11 owner  12 stream maxlen (0 = no trim)
--       13 workflow.started event id  14 deadline ms from now (0 = none)
-- Returns: { availableAt, firstStreamId, lastStreamId } (stream ids '' for a replay)
-- Errors: TROUPE_EXISTS workflow id taken (start) | TROUPE_NOWF no such workflow (send)
--         TROUPE_ENDED workflow already ended (send) | TROUPE_DUP action id taken
local status_key, actions_key, seq_key, events_key, mailbox =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local wf, action_id, agent, typ, record = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local delay = tonumber(ARGV[6])
local event_id, parent_event, channel, mode, owner = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local maxlen = tonumber(ARGV[12])
local now, now_s = now_pair()
local first_sid

-- A replay: the client resent this after a dropped connection and the first send
-- had landed. Action ids are generated per call (or chosen by the caller for
-- idempotency), so the same id for the same agent and type means the same call.
local prior = redis.call('HGET', actions_key, action_id .. ':st')
if prior then
  -- The same id for another agent or type is not a resend but a clash: say so
  -- rather than answer "queued" for an action that was not.
  local rok, rec = pcall(cjson.decode, redis.call('HGET', actions_key, action_id) or '')
  if rok and type(rec) == 'table' and (rec.agent ~= agent or rec.type ~= typ) then
    return redis.error_reply('TROUPE_DUP action ' .. action_id .. ' already exists in workflow ' .. wf .. ' for ' .. tostring(rec.agent) .. ' ' .. tostring(rec.type))
  end
  local ok, st = pcall(cjson.decode, prior)
  local at = (ok and type(st) == 'table' and tonumber(st.availableAt)) or now
  return { at, '', '' }
end

local status = redis.call('HGET', status_key, 'status')
if mode == 'start' then
  if status then return redis.error_reply('TROUPE_EXISTS workflow ' .. wf .. ' already exists') end
  if redis.call('HSETNX', actions_key, action_id, record) == 0 then
    return redis.error_reply('TROUPE_DUP action ' .. action_id .. ' already exists in workflow ' .. wf)
  end
  -- The hash as it stands once this first action is queued, in one write
  -- (each redis.call has a fixed cost beyond the command's own): running, one
  -- action, the entry agent listed. The workflow.status event
  -- below still tells of the move from pending, as every start always has.
  local fields = { 'status', 'running', 'owner', owner, 'entry', agent,
    'createdAt', now_s, 'updatedAt', now_s, 'queued', '1', 'done', '0', 'dead', '0', 'actions', '1' }
  local deadline_in = tonumber(ARGV[14])
  if deadline_in > 0 then
    fields[#fields + 1] = 'deadline'
    fields[#fields + 1] = int(now + deadline_in)
  end
  fields[#fields + 1] = 'agent:' .. agent
  fields[#fields + 1] = ''
  redis.call('HSET', status_key, unpack(fields))
  first_sid = append_event(events_key, channel, maxlen, event_json(ARGV[13], wf, 'workflow.started',
    '{"entry":' .. cjson.encode(agent) .. ',"type":' .. cjson.encode(typ) .. ',"owner":' .. cjson.encode(owner) .. '}', '', '', 0, '', now_s))
else
  if not status then return redis.error_reply('TROUPE_NOWF no workflow ' .. wf) end
  if TERMINAL[status] then return redis.error_reply('TROUPE_ENDED workflow ' .. wf .. ' is ' .. status) end
  if redis.call('HSETNX', actions_key, action_id, record) == 0 then
    return redis.error_reply('TROUPE_DUP action ' .. action_id .. ' already exists in workflow ' .. wf)
  end
end

local seq = redis.call('INCR', seq_key)
local available_at = now + delay
local at_s = now_s
if delay ~= 0 then at_s = int(available_at) end
redis.call('HSET', actions_key, action_id .. ':st', '{"status":"queued","attempt":0,"seq":' .. int(seq) .. ',"availableAt":' .. at_s .. '}')
redis.call('ZADD', mailbox, at_s, member_of(seq, action_id))
local changed = 'running'
if mode ~= 'start' then
  redis.call('HSETNX', status_key, 'agent:' .. agent, '')
  local queued = redis.call('HINCRBY', status_key, 'queued', '1')
  redis.call('HINCRBY', status_key, 'actions', '1')
  changed = settle_status(status_key, now_s, status, queued)
  -- settle_status wrote updatedAt with a change of status.
  if not changed then redis.call('HSET', status_key, 'updatedAt', now_s) end
end

local sid = append_event(events_key, channel, maxlen, event_json(event_id, wf, 'action.enqueued',
  '{"actionId":' .. cjson.encode(action_id) .. ',"agent":' .. cjson.encode(agent) .. ',"type":' .. cjson.encode(typ) .. ',"availableAt":' .. at_s .. '}',
  agent, action_id, 0, parent_event, now_s))
first_sid = first_sid or sid
if changed then
  sid = append_event(events_key, channel, maxlen,
    event_json(event_id .. '.s', wf, 'workflow.status', '{"status":"' .. changed .. '"}', '', '', 0, '', now_s))
end

return { available_at, first_sid, sid }
