-- commit: the one fenced write at the end of each delivered action. Atomically:
-- rejects a stale fence; writes the new snapshot and the agent's state; acks the
-- action, schedules its retry, or dead-letters it; writes the actions the agent
-- sent (the outbox) into their mailboxes; appends the events buffered during the
-- action; applies a workflow completion or failure; then claims the next due
-- action, or releases the lock when none is due.
--
-- KEYS: 1 workflow:actor:<agent>  2 lock:<agent>  3 workflow:queue:<agent>  4 workflow:actions
--       5 workflow:status  6 workflow:events  7 workflow:seq  8 workflow:dead
--       then for each outbox entry: its target mailbox and its target lock (2 keys each)
-- ARGV: 1 fence  2 lock value  3 wf  4 agent  5 actionId
--       6 outcome: 'ok' | 'retry' | 'dead'  7 snapshot JSON ('' = keep)  8 state value JSON ('' = keep)
--       9 error text  10 retry delay ms  11 event id base  12 channel  13 stream maxlen
--       14 workflow op: '' | 'complete' | 'fail'  15 op payload JSON  16 release: '1' = release even if work is due (drain)
--       17 event id of the action's action.enqueued (parent of what it caused)  18 duration ms
--       19 number of buffered events (E)  20 number of outbox entries (O)  21 machine version  22 retention ms (0 = none)
--       23 the delivery's attempt number
--       then E event JSONs, then O x 5: agent, actionId, record JSON, delay ms, event id
-- Returns: { code, record|'', attempt, actionId|'', nextDue|'', firstStreamId, lastStreamId, hints... }
--          code 'next' (the next action is claimed), 'idle' (lock released), 'ended' (workflow over, lock released);
--          hints: flat list agent, score for targets whose actor is not held by anyone
-- Errors: TROUPE_FENCE the fence moved on: a newer activation owns this actor
--         TROUPE_STALE the action is not the one in flight for this actor
local actor_key, lock_key, mailbox, actions_key, status_key, events_key, seq_key, dead_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local fence, lock_value, wf, agent, action_id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local outcome, snapshot, state_value, err = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
local retry_delay, ev_base, channel, maxlen = tonumber(ARGV[10]), ARGV[11], ARGV[12], tonumber(ARGV[13])
local op, op_payload, release, parent_event = ARGV[14], ARGV[15], ARGV[16], ARGV[17]
local duration, n_events, n_out, version, retention =
  tonumber(ARGV[18]), tonumber(ARGV[19]), tonumber(ARGV[20]), ARGV[21], tonumber(ARGV[22])
local attempt = tonumber(ARGV[23])
local ARG0 = 23

local held = redis.call('HMGET', actor_key, 'fence', 'inflight')
if held[1] ~= fence then
  return redis.error_reply('TROUPE_FENCE fence ' .. fence .. ' of ' .. agent .. ' in ' .. wf .. ' is stale')
end
if held[2] ~= action_id then
  return redis.error_reply('TROUPE_STALE action ' .. action_id .. ' is not in flight for ' .. agent .. ' in ' .. wf)
end
local now = now_ms()
local first_sid, last_sid
local function add(json)
  last_sid = append_event(events_key, channel, maxlen, json)
  first_sid = first_sid or last_sid
end
local n_ev = 0
local function ev_id()
  n_ev = n_ev + 1
  return ev_base .. '.' .. n_ev
end
local function set_st(id, fields)
  local ok, st = pcall(cjson.decode, redis.call('HGET', actions_key, id .. ':st') or '')
  if not ok or type(st) ~= 'table' then st = {} end
  for k, v in pairs(fields) do st[k] = v end
  redis.call('HSET', actions_key, id .. ':st', cjson.encode(st))
  return st
end
local function finish(code, rec, attempt, id, nxt, hints)
  local out = { code, rec or '', attempt or 0, id or '', nxt or '', first_sid or '', last_sid or '' }
  for _, h in ipairs(hints or {}) do out[#out + 1] = h end
  return out
end
local function end_activation()
  redis.call('HDEL', actor_key, 'inflight')
  release_lock(lock_key, lock_value)
end

redis.call('HDEL', actor_key, 'inflight')
local status = redis.call('HGET', status_key, 'status')
if not status or TERMINAL[status] then
  -- Ended while we worked (cancel, deadline, another agent completed it): nothing
  -- of this action takes effect.
  set_st(action_id, { status = 'cancelled' })
  drop_mailbox(mailbox, actions_key)
  if retention > 0 then redis.call('PEXPIRE', actor_key, retention) end
  end_activation()
  return finish('ended')
end

for i = 1, n_events do add(ARGV[ARG0 + i]) end

local st
local queued
if outcome == 'ok' then
  -- The common path writes the final state without reading the old one back.
  st = { status = 'done', attempt = attempt, finishedAt = now }
  redis.call('HSET', actions_key, action_id .. ':st', cjson.encode(st))
  if snapshot ~= '' then redis.call('HSET', actor_key, 'snapshot', snapshot, 'version', version) end
  if state_value ~= '' then
    redis.call('HSET', status_key, 'agent:' .. agent, state_value, 'updatedAt', now)
  else
    redis.call('HSET', status_key, 'updatedAt', now)
  end
  queued = redis.call('HINCRBY', status_key, 'queued', -1)
  redis.call('HINCRBY', status_key, 'done', 1)
  add(make_event(ev_id(), wf, 'action.completed',
    { actionId = action_id, agent = agent, durationMs = duration }, agent, action_id, st.attempt or 0, parent_event, now))
elseif outcome == 'retry' then
  local at = now + retry_delay
  st = set_st(action_id, { status = 'retry', error = err, availableAt = at })
  redis.call('HSET', status_key, 'updatedAt', now)
  redis.call('ZADD', mailbox, at, member_of(tonumber(st.seq) or 0, action_id))
  add(make_event(ev_id(), wf, 'action.failed',
    { actionId = action_id, agent = agent, error = err, retryAt = at, durationMs = duration }, agent, action_id, st.attempt or 0, parent_event, now))
else
  st = set_st(action_id, { status = 'dead', error = err, finishedAt = now })
  redis.call('ZADD', dead_key, now, action_id)
  redis.call('HSET', status_key, 'updatedAt', now)
  queued = redis.call('HINCRBY', status_key, 'queued', -1)
  redis.call('HINCRBY', status_key, 'dead', 1)
  add(make_event(ev_id(), wf, 'action.dead',
    { actionId = action_id, agent = agent, error = err }, agent, action_id, st.attempt or 0, parent_event, now))
end

-- The outbox: only an acked action's sends take effect, exactly once with the ack.
local hints = {}
local hinted = {}
if outcome == 'ok' then
  local base = ARG0 + n_events
  for j = 0, n_out - 1 do
    local a = base + j * 5
    local to, id, rec, delay, eid = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4]), ARGV[a + 5]
    local to_mailbox, to_lock = KEYS[9 + j * 2], KEYS[10 + j * 2]
    if redis.call('HSETNX', actions_key, id, rec) == 1 then
      local seq = redis.call('INCR', seq_key)
      local at = now + delay
      redis.call('HSET', actions_key, id .. ':st', cjson.encode({ status = 'queued', attempt = 0, seq = seq, availableAt = at }))
      redis.call('ZADD', to_mailbox, at, member_of(seq, id))
      redis.call('HSETNX', status_key, 'agent:' .. to, '')
      queued = redis.call('HINCRBY', status_key, 'queued', 1)
      redis.call('HINCRBY', status_key, 'actions', 1)
      add(make_event(eid, wf, 'action.enqueued', { actionId = id, agent = to, from = agent, availableAt = at },
        to, id, 0, parent_event, now))
      if to ~= agent and not hinted[to] and redis.call('EXISTS', to_lock) == 0 then
        hinted[to] = true
        hints[#hints + 1] = to
        hints[#hints + 1] = tostring(math.min(at, now))
      end
    end
  end
end

if op == 'complete' or op == 'fail' then
  local final = 'completed'
  local field = 'result'
  if op == 'fail' then final, field = 'failed', 'error' end
  redis.call('HSET', status_key, 'status', final, field, op_payload, 'updatedAt', now, 'endedAt', now)
  -- The payload is spliced in as the client encoded it: a decode/encode round trip
  -- through cjson would turn empty arrays into objects.
  local ev = make_event(ev_id(), wf, 'workflow.' .. final, '\0raw', agent, action_id, st.attempt or 0, parent_event, now)
  local at = string.find(ev, '"\\u0000raw"', 1, true)
  if at then ev = string.sub(ev, 1, at - 1) .. op_payload .. string.sub(ev, at + 11) end
  add(ev)
  drop_mailbox(mailbox, actions_key)
  if retention > 0 then
    for i = 1, 8 do redis.call('PEXPIRE', KEYS[i], retention) end
  end
  end_activation()
  return finish('ended', nil, nil, nil, nil, hints)
end

local changed = settle_status(status_key, now, status, queued)
if changed then add(make_event(ev_id(), wf, 'workflow.status', { status = changed }, '', '', 0, '', now)) end

if release ~= '1' then
  local claimed = claim_next(actor_key, mailbox, actions_key, status_key, now)
  if claimed then return finish('next', claimed[1], claimed[2], claimed[3], nil, hints) end
end
release_lock(lock_key, lock_value)
return finish('idle', nil, nil, nil, next_at(mailbox), hints)
