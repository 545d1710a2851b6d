-- commit: the one fenced write after an activation delivered its in-flight batch
-- of actions (one at a time, in order). Atomically: rejects a stale fence; for each
-- action acks it, schedules its retry, dead-letters it, or returns it undelivered
-- to the mailbox; writes the actions each acked one sent (the outbox) into their
-- mailboxes; appends the events buffered while it ran; writes the snapshot after
-- the last acked action; applies a workflow completion or failure; then claims the
-- next batch of due actions, or releases the lock when none is due.
--
-- KEYS: 1 workflow:actor:<agent>  2 lock:<agent>  3 workflow:queue:<agent>  4 workflow:actions
--       5 workflow:status  6 workflow:events  7 workflow:seq  8 workflow:dead
--       then, for each outbox entry across the batch in order: its target mailbox and target lock
-- ARGV: 1 fence  2 lock value  3 wf  4 agent  5 event id base  6 channel  7 stream maxlen
--       8 snapshot JSON ('' = keep)  9 state value JSON ('' = keep)  10 machine version  11 retention ms (0 = none)
--       12 release: '1' = release even if work is due (drain, fairness)  13 workflow op: '' | 'complete' | 'fail'
--       14 op payload JSON  15 batch size for the next claim  16 number of action results (N)
--       then N results, each: actionId, outcome ('ok' | 'retry' | 'dead' | 'return' | 'handback'), error (for
--         'handback': the reason should it be dead-lettered), retry delay ms (for 'handback': how long it
--         waits before it is due again),
--         parent event id (its action.enqueued), duration ms, attempt, number of events (E), number of sends (S),
--         followed by E event JSONs and S x 8 send fields: agent, actionId, record JSON, delay ms, event id,
--         join key ('' = none), join count, join timeout ms
-- Returns: { code, nextDue|'', firstStreamId, lastStreamId, hintCount, agent1, score1, ..., record1, attempt1, id1, dueAt1, ... }
--          A commit that ends the workflow also leaves, in the actor hash's `unhint` field, the
--          other agents (space-separated) whose ready hints are to go (see unheld_agents).
--          'handback' results dead-lettered for their age are in workflow:dead like any other.
--          code 'next' (a new batch is claimed and follows the hints), 'idle' (lock released),
--          'ended' (workflow over, lock released); hints are targets whose actor nobody holds
--          A replay of the same commit (same event id base) answers like the first run
--          and changes nothing; its hints are the outbox targets nobody holds whose
--          mailbox has work due now (a join the first run completed); when the first run claimed a batch
--          and our lock has run out since, it answers 'idle' with nextDue = now.
-- Errors: TROUPE_FENCE the fence moved on: a newer activation owns this actor
--         TROUPE_STALE a result names an action that is not in flight for this actor
local actor_key, lock_key, mailbox, actions_key, status_key, events_key, seq_key, dead_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local fence, lock_value, wf, agent, ev_base, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local maxlen, snapshot, state_value, version = tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[10]
local retention, release, op, op_payload = tonumber(ARGV[11]), ARGV[12], ARGV[13], ARGV[14]
local batch, n_results = tonumber(ARGV[15]), tonumber(ARGV[16])
-- How long actions may be handed back for a newer agent version (see the 'handback' outcome): an hour.
local HANDBACK_LIMIT_MS = 3600000

local held = redis.call('HMGET', actor_key, 'fence', 'inflight', 'committed')
local in_flight = {}
for _, id in ipairs(inflight_ids(held[2])) do in_flight[id] = true end

-- The same commit again (ioredis resends a command whose reply a dropped
-- connection lost): it took effect once, so answer as it did instead of
-- rejecting it as stale, which would stall the actor for a lock TTL and count a
-- spurious attempt. The claimed next batch is whatever is in flight now. This
-- comes before the fence check: another activation may have taken the actor
-- (and moved the fence) between the first run and the resend, and a refusal
-- then lost what only this answer carries (the hints of a join the first run
-- completed, the end of the workflow to announce).
local marker = held[3]
if marker then
  local base, m_first, m_last = string.match(marker, '^(%S+) (%S*) (%S*) ?%a*$')
  if base == ev_base then
    local st_now = redis.call('HGET', status_key, 'status')
    local out = { 'idle', '', m_first, m_last, 0 }
    if st_now and not TERMINAL[st_now] then
      -- The first run's hints went with its lost reply. A plain send has its
      -- pre-hint, due at once; a join the first run completed has none due
      -- before its deadline. So: every target of this outbox that nobody holds
      -- and whose mailbox has work due now.
      local now_r = now_ms()
      local cursor, k_at, seen = 17, 9, {}
      for _ = 1, n_results do
        local ok_result = ARGV[cursor + 1] == 'ok'
        local n_out = tonumber(ARGV[cursor + 8])
        local out_at = cursor + 9 + tonumber(ARGV[cursor + 7])
        for j = 0, n_out - 1 do
          local to = ARGV[out_at + j * 8]
          if ok_result and to ~= agent and not seen[to] then
            seen[to] = true
            local due = next_at(KEYS[k_at])
            if due and tonumber(due) <= now_r and redis.call('EXISTS', KEYS[k_at + 1]) == 0 then
              out[#out + 1] = to
              out[#out + 1] = int(now_r)
              out[5] = out[5] + 1
            end
          end
          k_at = k_at + 2
        end
        cursor = out_at + n_out * 8
      end
    end
    if not st_now or TERMINAL[st_now] then
      out[1] = 'ended'
      -- The first run claimed a next batch and the workflow ended before this
      -- resend: nobody will deliver that batch (the ending kept our hint for
      -- us, and our caller releases it on 'ended'), so it is cancelled here, as
      -- the terminal path below does, unless another activation holds the actor
      -- (its own commit or activation deals with what it holds).
      local holder = redis.call('GET', lock_key)
      if next(in_flight) ~= nil and (not holder or holder == lock_value) then
        cancel_inflight(actor_key, actions_key, inflight_ids(held[2]))
        release_lock(lock_key, lock_value)
      end
    elseif next(in_flight) ~= nil and redis.call('GET', lock_key) == lock_value then
      out[1] = 'next'
      for _, id in ipairs(inflight_ids(held[2])) do
        local got = redis.call('HMGET', actions_key, id, id .. ':st')
        local ok, st = pcall(cjson.decode, got[2] or '')
        if got[1] and ok and type(st) == 'table' then
          out[#out + 1] = got[1]
          out[#out + 1] = tonumber(st.attempt) or 1
          out[#out + 1] = id
          out[#out + 1] = tonumber(st.availableAt) or 0
        end
      end
    elseif next(in_flight) ~= nil then
      -- The first run claimed a batch, but our lock ran out before this replay:
      -- nobody holds the actor and that batch is in flight. 'idle' with "due now"
      -- makes the caller move the hint to now instead of releasing it, and the
      -- next activation redelivers the batch.
      out[2] = tostring(now_ms())
    else
      out[2] = next_at(mailbox) or ''
    end
    return out
  end
end

if held[1] ~= fence then
  return redis.error_reply('TROUPE_FENCE fence ' .. fence .. ' of ' .. agent .. ' in ' .. wf .. ' is stale')
end

-- Read the results first: a stale one rejects the whole commit before any write.
local results = {}
local cursor = 17
for _ = 1, n_results do
  local r = {
    id = ARGV[cursor], outcome = ARGV[cursor + 1], err = ARGV[cursor + 2], delay = tonumber(ARGV[cursor + 3]),
    parent = ARGV[cursor + 4], duration = tonumber(ARGV[cursor + 5]), attempt = tonumber(ARGV[cursor + 6]),
    n_events = tonumber(ARGV[cursor + 7]), n_out = tonumber(ARGV[cursor + 8]),
  }
  r.events_at = cursor + 9
  r.out_at = r.events_at + r.n_events
  cursor = r.out_at + r.n_out * 8
  if not in_flight[r.id] then
    return redis.error_reply('TROUPE_STALE action ' .. r.id .. ' is not in flight for ' .. agent .. ' in ' .. wf)
  end
  results[#results + 1] = r
end

local now, now_s = now_pair()
local first_sid, last_sid
local function add(json)
  last_sid = append_event(events_key, channel, maxlen, json)
  first_sid = first_sid or last_sid
end
local n_ev = 0
local function ev_id()
  n_ev = n_ev + 1
  return ev_base .. '.' .. int(n_ev)
end
local function set_st(id, fields)
  local ok, st = pcall(cjson.decode, redis.call('HGET', actions_key, id .. ':st') or '')
  if not ok or type(st) ~= 'table' then st = {} end
  for k, v in pairs(fields) do st[k] = v end
  redis.call('HSET', actions_key, id .. ':st', cjson.encode(st))
  return st
end
-- The actor's snapshot goes in with the marker below: one HSET, one command
-- fewer (each redis.call has a fixed cost, about 0.2 µs here, more than a
-- cheap command's own).
local actor_fields = {}
local function finish(code, nxt, hints, claimed)
  -- What a replay of this same commit needs to answer the same way (see above).
  -- settle.lua reads the code too: whether this commit kept the actor (next batch).
  actor_fields[#actor_fields + 1] = 'committed'
  actor_fields[#actor_fields + 1] = ev_base .. ' ' .. (first_sid or '') .. ' ' .. (last_sid or '') .. ' ' .. code
  redis.call('HSET', actor_key, unpack(actor_fields))
  local out = { code, nxt or '', first_sid or '', last_sid or '', #hints / 2 }
  for _, h in ipairs(hints) do out[#out + 1] = h end
  for _, c in ipairs(claimed or {}) do out[#out + 1] = c end
  return out
end

redis.call('HDEL', actor_key, 'inflight')
-- The counters are read here and written once at the end, with the rest of the
-- status hash's fields (no other step of this script writes them).
local counts = redis.call('HMGET', status_key, 'status', 'queued', 'done', 'dead', 'actions', 'joins')
local status = counts[1]
if not status or TERMINAL[status] then
  -- Ended while we worked (cancel, deadline, another agent completed it): nothing
  -- of these actions takes effect.
  for _, r in ipairs(results) do set_st(r.id, { status = 'cancelled' }) end
  drop_mailbox(mailbox, actions_key)
  if retention > 0 then redis.call('PEXPIRE', actor_key, retention) end
  release_lock(lock_key, lock_value)
  return finish('ended', nil, {})
end

local hints, hinted = {}, {}
-- The joins' index (join_index_sweep in lib.lua): which join fields can go, and when.
local joins = { raw = counts[6] }
local queued_delta, done, dead, sent = 0, 0, 0, 0
local function dead_letter(r)
  set_st(r.id, { status = 'dead', error = r.err, finishedAt = now })
  redis.call('ZADD', dead_key, now, r.id)
  queued_delta = queued_delta - 1
  dead = dead + 1
  add(make_event(ev_id(), wf, 'action.dead', { actionId = r.id, agent = agent, error = r.err }, agent, r.id, r.attempt, r.parent, now))
end
-- Targets whose `agent:<name>` field this commit made sure of.
local listed = {}
local key_at = 9
for _, r in ipairs(results) do
  for i = 0, r.n_events - 1 do add(ARGV[r.events_at + i]) end
  if r.outcome == 'ok' then
    redis.call('HSET', actions_key, r.id .. ':st', '{"status":"done","attempt":' .. int(r.attempt) .. ',"finishedAt":' .. now_s .. '}')
    queued_delta = queued_delta - 1
    done = done + 1
    add(event_json(ev_id(), wf, 'action.completed',
      '{"actionId":' .. cjson.encode(r.id) .. ',"agent":' .. cjson.encode(agent) .. ',"durationMs":' .. int(r.duration) .. '}',
      agent, r.id, r.attempt, r.parent, now_s))
    -- The outbox: only an acked action's sends take effect, exactly once with the ack.
    for j = 0, r.n_out - 1 do
      local a = r.out_at + j * 8
      local to, id, rec, delay, eid = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), ARGV[a + 4]
      local join_key = ARGV[a + 5]
      local to_mailbox, to_lock = KEYS[key_at], KEYS[key_at + 1]
      key_at = key_at + 2
      if redis.call('HSETNX', actions_key, id, rec) == 1 then
        local seq = redis.call('INCR', seq_key)
        local member = member_of(seq, id)
        local at = now + delay
        local at_s = now_s
        if delay ~= 0 then at_s = int(at) end
        -- A join holds its actions at its deadline until the last one comes
        -- (join_send in lib.lua); false: this one made it complete, all due now.
        local held_until, join_json = false, ''
        if join_key ~= '' then
          held_until = join_send(status_key, actions_key, to_mailbox, to, join_key, tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]), member, now, now_s, joins)
          if held_until then at, at_s = tonumber(held_until), held_until end
          join_json = ',"join":{"key":' .. cjson.encode(join_key) .. ',"of":' .. int(tonumber(ARGV[a + 6])) .. '}'
        end
        redis.call('HSET', actions_key, id .. ':st', '{"status":"queued","attempt":0,"seq":' .. int(seq) .. ',"availableAt":' .. at_s .. '}')
        redis.call('ZADD', to_mailbox, at_s, member)
        if not listed[to] then
          listed[to] = true
          redis.call('HSETNX', status_key, 'agent:' .. to, '')
        end
        queued_delta = queued_delta + 1
        sent = sent + 1
        add(event_json(eid, wf, 'action.enqueued',
          '{"actionId":' .. cjson.encode(id) .. ',"agent":' .. cjson.encode(to) .. ',"from":' .. cjson.encode(agent) .. ',"availableAt":' .. at_s .. join_json .. '}',
          to, id, 0, r.parent, now_s))
        -- A held action needs no hint now: the pre-hint (at the latest deadline
        -- the join can have) covers its timeout, and the commit that completes it hints.
        if not held_until and to ~= agent and not hinted[to] and redis.call('EXISTS', to_lock) == 0 then
          hinted[to] = true
          hints[#hints + 1] = to
          hints[#hints + 1] = (at < now) and int(at) or now_s
        end
      end
    end
  else
    key_at = key_at + r.n_out * 2
    if r.outcome == 'retry' then
      local at = now + r.delay
      local st = set_st(r.id, { status = 'retry', error = r.err, availableAt = at })
      redis.call('ZADD', mailbox, at, member_of(tonumber(st.seq) or 0, r.id))
      add(make_event(ev_id(), wf, 'action.failed', { actionId = r.id, agent = agent, error = r.err, retryAt = at, durationMs = r.duration },
        agent, r.id, r.attempt, r.parent, now))
    elseif r.outcome == 'return' or r.outcome == 'handback' then
      -- 'return': claimed but not delivered (drain, or the batch was cut short):
      -- back in line at its old place, and this claim does not count as an
      -- attempt. 'handback': the same, held back `delay` ms, for a process of the
      -- newer agent version that wrote the actor's snapshot; dead-lettered with
      -- the reason once HANDBACK_LIMIT_MS have passed since its first hand-back
      -- (a rollback: no such process is coming).
      local ok, st = pcall(cjson.decode, redis.call('HGET', actions_key, r.id .. ':st') or '')
      if ok and type(st) == 'table' then
        if r.outcome == 'handback' then st.handedBackAt = tonumber(st.handedBackAt) or now end
        if r.outcome == 'handback' and now - st.handedBackAt > HANDBACK_LIMIT_MS then
          dead_letter(r)
        else
          st.status = 'queued'
          st.attempt = math.max(0, (tonumber(st.attempt) or 1) - 1)
          local at = tonumber(st.availableAt) or now
          if r.outcome == 'handback' and at < now + r.delay then
            at = now + r.delay
            st.availableAt = at
          end
          redis.call('HSET', actions_key, r.id .. ':st', cjson.encode(st))
          redis.call('ZADD', mailbox, at, member_of(tonumber(st.seq) or 0, r.id))
        end
      end
    else
      dead_letter(r)
    end
  end
end

if snapshot ~= '' then
  actor_fields[1], actor_fields[2], actor_fields[3], actor_fields[4] = 'snapshot', snapshot, 'version', version
end
-- One write of the status hash: what HSET and HINCRBYs did field by field.
-- A counter a hand edit left unreadable counts from 0 (HINCRBY would fail the commit).
local fields = { 'updatedAt', now_s }
local function put(name, value)
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
if state_value ~= '' then put('agent:' .. agent, state_value) end
local queued = (tonumber(counts[2]) or 0) + queued_delta
if done > 0 then put('done', int((tonumber(counts[3]) or 0) + done)) end
if dead > 0 then put('dead', int((tonumber(counts[4]) or 0) + dead)) end
if sent > 0 then put('actions', int((tonumber(counts[5]) or 0) + sent)) end

if op == 'complete' or op == 'fail' then
  local final = 'completed'
  local field = 'result'
  if op == 'fail' then final, field = 'failed', 'error' end
  -- Every agent's queue goes, as on cancel: an action left queued in an ended
  -- workflow stayed "queued" (and counted) until an activation came for it.
  put('queued', '0')
  put('status', final)
  put(field, op_payload)
  put('endedAt', now_s)
  redis.call('HSET', status_key, unpack(fields))
  -- The payload goes in as the client encoded it: a decode/encode round trip
  -- through cjson would turn empty arrays into objects.
  local last = results[#results] or {}
  add(event_json(ev_id(), wf, 'workflow.' .. final, op_payload, agent, last.id or '', last.attempt or 0, last.parent or '', now_s))
  drop_mailboxes(status_key, mailbox, agent, actions_key)
  if retention > 0 then
    for i = 1, 8 do redis.call('PEXPIRE', KEYS[i], retention) end
    expire_agents(status_key, actor_key, mailbox, agent, retention)
  end
  -- The other agents' ready hints go too (unheld_agents in lib.lua), but they
  -- are in other slots: settle.lua removes them on a single Redis, the
  -- activation on a Cluster, both from this list next to the marker. Read
  -- while our lock is still held, so this agent's own hint is left to our release.
  local unhint = unheld_agents(status_key, string.sub(actor_key, 1, #actor_key - #agent), string.sub(lock_key, 1, #lock_key - #agent))
  if #unhint > 0 then
    actor_fields[#actor_fields + 1] = 'unhint'
    actor_fields[#actor_fields + 1] = table.concat(unhint, ' ')
  end
  release_lock(lock_key, lock_value)
  -- No hints: the actions this commit sent were dropped with every queue above.
  return finish('ended', nil, {})
end

-- Join fields that can no longer matter go (any commit of the workflow will
-- do: most have one in the round after); a workflow without joins reads only
-- the index's absence, above.
local joins_value = join_index_sweep(joins, status_key, now)
if joins_value then put('joins', joins_value) end
-- Running while actions are queued or in flight, waiting when none are (as
-- lib.lua's status helper decides for the other scripts).
put('queued', int(queued))
local changed = false
local want = 'running'
if queued <= 0 then want = 'waiting' end
if status ~= want then
  put('status', want)
  changed = want
end
redis.call('HSET', status_key, unpack(fields))
if changed then add(event_json(ev_id(), wf, 'workflow.status', '{"status":"' .. changed .. '"}', '', '', 0, '', now_s)) end

if release ~= '1' then
  local claimed = claim_batch(actor_key, mailbox, actions_key, status_key, now, batch)
  if #claimed > 0 then return finish('next', nil, hints, claimed) end
end
release_lock(lock_key, lock_value)
return finish('idle', next_at(mailbox), hints)
