-- lib: helpers put in front of each script that uses them, by runtime/redis/scripts.ts
-- (preludeFor: only one-name `local` definitions at the margin). Not a script itself.
-- Every script of a workflow uses Redis server time (TIME) for scores, so that
-- processes with skewed clocks still agree on what is due.

-- A ready hint's score as a string the client reads back exactly. Leases carry a
-- fraction of a millisecond (see leaseMs in runtime/claims.ts); tostring keeps
-- only 14 digits and an integer reply drops the fraction.
local function score_str(x)
  return string.format('%.17g', x)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Lua turns every number it makes a string of (a concatenation, an argument of
-- redis.call, a number cjson encodes) with printf's %.14g or %.17g, whose
-- floating-point path was about 7% of Redis's CPU under a busy workflow load.
-- The hot paths pass integers through int() (printf's integer path) and the
-- time as the string TIME's own digits make.

-- An integer as its decimal string.
local function int(n)
  return string.format('%d', n)
end

-- Server time in ms, as a number and as its decimal string (same value as now_ms).
local function now_pair()
  local t = redis.call('TIME')
  local us = t[2]
  local ms = '0'
  if #us > 3 then ms = string.sub(us, 1, #us - 3) end
  local s = t[1] .. string.sub('00' .. ms, -3)
  return tonumber(s), s
end

-- Appends one pre-encoded WorkflowEvent to the workflow stream and publishes the
-- live copy, with its stream id, on the workflow channel. maxlen 0: never trim
-- (the persister still has to read it).
local function append_event(stream, channel, maxlen, json)
  local sid
  if maxlen > 0 then
    sid = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', json)
  else
    sid = redis.call('XADD', stream, '*', 'e', json)
  end
  redis.call('PUBLISH', channel, '{"streamId":"' .. sid .. '","event":' .. json .. '}')
  return sid
end

-- Builds a WorkflowEvent of the seed's shape for events the scripts themselves
-- raise, from strings: content_json is JSON already, now_s the time's digits,
-- and every other string is quoted by cjson (anything is safe in it).
local function event_json(id, wf, typ, content_json, agent, action_id, attempt, parent, now_s)
  local meta = '{"at":' .. now_s
  if agent and agent ~= '' then meta = meta .. ',"agent":' .. cjson.encode(agent) end
  if action_id and action_id ~= '' then meta = meta .. ',"actionId":' .. cjson.encode(action_id) end
  if attempt and attempt > 0 then meta = meta .. ',"attempt":' .. int(attempt) end
  local tail = '}}'
  if parent and parent ~= '' then tail = '},"parentId":' .. cjson.encode(parent) .. '}' end
  return '{"id":' .. cjson.encode(id) .. ',"workflowId":' .. cjson.encode(wf) .. ',"type":' .. cjson.encode(typ) ..
    ',"content":' .. content_json .. ',"metadata":' .. meta .. tail
end

-- The same with a Lua table as content (paths that are not hot).
local function make_event(id, wf, typ, content, agent, action_id, attempt, parent, now)
  return event_json(id, wf, typ, cjson.encode(content), agent, action_id, attempt, parent, int(now))
end

local TERMINAL = { completed = true, failed = true, cancelled = true }

local function member_of(seq, id)
  return string.format('%012d:%s', seq, id)
end

local function id_of(member)
  return string.sub(member, 14)
end

-- Moves the workflow between running and waiting as its count of live actions
-- (queued or in flight) changes; returns the new status when it changed. Callers
-- that already read the status or the count pass them in.
local function settle_status(status_key, now, st, queued)
  st = st or redis.call('HGET', status_key, 'status')
  if TERMINAL[st] then return false end
  queued = tonumber(queued or redis.call('HGET', status_key, 'queued') or '0')
  local want = 'running'
  if queued <= 0 then want = 'waiting' end
  if st ~= want then
    redis.call('HSET', status_key, 'status', want, 'updatedAt', now)
    return want
  end
  return false
end

-- The joins' index: the status hash's `joins` field, '<earliest> <JSON>', the
-- JSON mapping each `join:` field to the time after which it can no longer
-- matter (its deadline plus its timeout: its members have been let go, and a
-- straggler would open a new join). A join that times out is never sent to
-- again under a key that names its round, so without it every timed-out
-- round left its field in the hash for good. Only the earliest time is read
-- on every commit (with the counters); the JSON is decoded by a commit that
-- sends joined actions, or once something in it is due.
local function join_index_map(idx)
  if not idx.map then
    idx.map = {}
    local json = idx.raw and string.match(idx.raw, '^%S+ (.*)$')
    if json then
      local ok, m = pcall(cjson.decode, json)
      if ok and type(m) == 'table' then idx.map = m end
    end
  end
  return idx.map
end

-- Records when a join field can go (at: ms, false once the field is deleted),
-- never earlier than recorded: a later send may have a longer timeout.
local function join_index_set(idx, field, at)
  local map = join_index_map(idx)
  if at then
    local cur = tonumber(map[field] or '')
    if cur and cur > at then return end
    map[field] = int(at)
  else
    map[field] = nil
  end
  idx.dirty = true
end

-- Deletes the join fields whose time has come (and the index once empty);
-- returns the index's new value for the caller's HSET, or nil when it is
-- unchanged or deleted. Reads nothing but the index, so a commit of a
-- workflow without joins pays one more HMGET field.
local function join_index_sweep(idx, status_key, now)
  local due = idx.raw and tonumber(string.match(idx.raw, '^(%d+)') or '')
  if not idx.dirty and not (due and due <= now) then return nil end
  local map = join_index_map(idx)
  local gone, earliest = {}, nil
  for field, at in pairs(map) do
    local t = tonumber(at)
    if not t or t <= now then
      gone[#gone + 1] = field
    elseif not earliest or t < earliest then
      earliest = t
    end
  end
  for _, field in ipairs(gone) do map[field] = nil end
  local value = nil
  if earliest then
    value = int(earliest) .. ' ' .. cjson.encode(map)
  elseif idx.raw then
    gone[#gone + 1] = 'joins'
  end
  if #gone > 0 then redis.call('HDEL', status_key, unpack(gone)) end
  return value
end

-- A fan-in (sendToAgent's join): actions sent to one agent of a workflow under
-- one key wait in its mailbox, scored at the join's deadline (its first action's
-- time plus the timeout), until `of` of them have come; the one that completes
-- the join makes every one of them due now, so one claim takes them together.
-- Its state is a field of the status hash, 'join:<agent>:<key>', so it lives and
-- expires with the workflow: 'o <deadline> <member>...' while open; once the
-- deadline let its members go, 'r <deadline> <count>', and stragglers (up to
-- `of` in all, within another timeout) are due at once instead of opening a new
-- join that would hold them for a whole timeout more. After that the field can
-- no longer matter, and the joins' index (idx, above) has it deleted. Returns
-- the deadline's digits to hold this action until, or false when it is due now.
local function join_send(status_key, actions_key, mailbox, to, key, of, timeout, member, now, now_s, idx)
  local field = 'join:' .. to .. ':' .. key
  local words = {}
  for word in string.gmatch(redis.call('HGET', status_key, field) or '', '%S+') do words[#words + 1] = word end
  local kind, deadline = words[1], tonumber(words[2] or '')
  if not deadline then kind = nil end
  local count = 0
  if kind == 'o' then
    count = #words - 2
    -- Timed out: its members came due at the deadline.
    if deadline <= now then kind = 'r' end
  elseif kind == 'r' then
    count = tonumber(words[3] or '') or 0
  end
  if kind == 'r' then
    if now <= deadline + timeout then
      if count + 1 < of then
        redis.call('HSET', status_key, field, 'r ' .. int(deadline) .. ' ' .. int(count + 1))
        join_index_set(idx, field, deadline + timeout)
      else
        redis.call('HDEL', status_key, field)
        join_index_set(idx, field, false)
      end
      return false
    end
    kind = nil
  end
  if kind ~= 'o' then
    -- A new join (none under this key, or the last one long over).
    count, deadline, words = 0, now + timeout, { 'o', int(now + timeout) }
  end
  if count + 1 < of then
    words[#words + 1] = member
    redis.call('HSET', status_key, field, table.concat(words, ' '))
    join_index_set(idx, field, deadline + timeout)
    return int(deadline)
  end
  redis.call('HDEL', status_key, field)
  join_index_set(idx, field, false)
  for i = 3, #words do
    local m = words[i]
    -- XX: only an action still waiting in the mailbox (one that was not there
    -- any more would otherwise be put back).
    if redis.call('ZADD', mailbox, 'XX', 'CH', now_s, m) == 1 then
      redis.call('HSET', actions_key, id_of(m) .. ':st',
        '{"status":"queued","attempt":0,"seq":' .. int(tonumber(string.sub(m, 1, 12)) or 0) .. ',"availableAt":' .. now_s .. '}')
    end
  end
  return false
end

-- Claims up to `max` due actions of a mailbox, in order, marks them running
-- (attempt + 1) and records their ids as the actor's in-flight batch. Members
-- whose record vanished or was written by hand without a state are dropped and
-- counted rather than blocking the mailbox. Returns a flat list
-- { record1, attempt1, id1, dueAt1, record2, ... }, empty when nothing is due;
-- dueAt is when the action became due (its delay, or the join that let it go),
-- so that the worker measures queue wait from then, not from its enqueue.
local function claim_batch(actor_key, mailbox, actions_key, status_key, now, max)
  local out, ids = {}, {}
  for _ = 1, 10 do
    local head = redis.call('ZRANGEBYSCORE', mailbox, '-inf', int(now), 'LIMIT', '0', int(max))
    if #head == 0 then break end
    redis.call('ZREM', mailbox, unpack(head))
    for _, member in ipairs(head) do
      local id = id_of(member)
      local got = redis.call('HMGET', actions_key, id, id .. ':st')
      local rec, st_raw = got[1], got[2]
      local ok, st = pcall(cjson.decode, st_raw or '')
      if rec and ok and type(st) == 'table' then
        st.status = 'running'
        st.attempt = (tonumber(st.attempt) or 0) + 1
        redis.call('HSET', actions_key, id .. ':st', cjson.encode(st))
        out[#out + 1] = rec
        out[#out + 1] = st.attempt
        out[#out + 1] = id
        out[#out + 1] = tonumber(st.availableAt) or 0
        ids[#ids + 1] = id
      else
        redis.call('HINCRBY', status_key, 'malformed', 1)
      end
    end
    if #ids > 0 then break end
  end
  if #ids > 0 then redis.call('HSET', actor_key, 'inflight', cjson.encode(ids)) end
  return out
end

-- The ids an actor has in flight (a JSON array; a bare id is accepted too).
local function inflight_ids(raw)
  if not raw then return {} end
  local ok, ids = pcall(cjson.decode, raw)
  if ok and type(ids) == 'table' then return ids end
  return { raw }
end

-- Earliest score left in a mailbox (a delayed action), or false.
local function next_at(mailbox)
  local first = redis.call('ZRANGE', mailbox, 0, 0, 'WITHSCORES')
  if first[2] then return first[2] end
  return false
end

-- Drops every action left in a mailbox of an ended workflow.
local function drop_mailbox(mailbox, actions_key)
  local members = redis.call('ZRANGE', mailbox, 0, -1)
  for _, member in ipairs(members) do
    local id = id_of(member)
    local st_raw = redis.call('HGET', actions_key, id .. ':st')
    local ok, st = pcall(cjson.decode, st_raw or '')
    if ok and type(st) == 'table' then
      st.status = 'cancelled'
      redis.call('HSET', actions_key, id .. ':st', cjson.encode(st))
    end
  end
  redis.call('DEL', mailbox)
  return #members
end

-- The agents of a workflow: the status hash's `agent:*` fields (an enqueue or a
-- commit registers an agent there before its first action is queued).
local function agents_of(status_key)
  local out = {}
  for _, field in ipairs(redis.call('HKEYS', status_key)) do
    if string.sub(field, 1, 6) == 'agent:' and #field > 6 then out[#out + 1] = string.sub(field, 7) end
  end
  return out
end

-- Drops every agent's mailbox of an ended workflow; the mailbox names are the
-- given one with the agent swapped (see expire_agents). Returns the count dropped.
local function drop_mailboxes(status_key, mailbox, agent, actions_key)
  local base = string.sub(mailbox, 1, #mailbox - #agent)
  local dropped = 0
  for _, name in ipairs(agents_of(status_key)) do dropped = dropped + drop_mailbox(base .. name, actions_key) end
  return dropped
end

-- Without a persister nothing else expires an ended workflow: its ending script
-- puts the retention TTL on every agent's actor and mailbox key too, not only on
-- the keys it was given. The other agents' keys are the caller's own actor and
-- mailbox names with the agent swapped (same {wf} slot), so keys.ts stays their
-- one definition.
local function expire_agents(status_key, actor_key, mailbox, agent, retention)
  local actor_base = string.sub(actor_key, 1, #actor_key - #agent)
  local mailbox_base = string.sub(mailbox, 1, #mailbox - #agent)
  for _, name in ipairs(agents_of(status_key)) do
    redis.call('PEXPIRE', actor_base .. name, retention)
    redis.call('PEXPIRE', mailbox_base .. name, retention)
  end
end

-- The agents of an ending workflow whose ready hints are to go with their
-- mailboxes (dropped by the same script): left, a hint waits for its due time,
-- up to ten years away for a delayed action, and then brings an activation that
-- finds the workflow over. Kept: a hint whose actor is held (the holder's lease:
-- its commit finds the workflow ended and its release settles the hint; one that
-- finds no hint has nothing to do) and one whose actor has a batch in flight (a
-- dead holder's: the activation it brings once the lock ran out marks that
-- batch cancelled). actor_base and lock_base are the actor and lock keys with
-- the agent name cut off (same {wf} slot). Shared by cancel.lua and commit.lua.
local function unheld_agents(status_key, actor_base, lock_base)
  local out = {}
  for _, name in ipairs(agents_of(status_key)) do
    if redis.call('EXISTS', lock_base .. name) == 0 and redis.call('HEXISTS', actor_base .. name, 'inflight') == 0 then
      out[#out + 1] = name
    end
  end
  return out
end

-- Removes workflow wf from the ready set of each of `names` (ready_base: the
-- ready key with the agent name cut off). Those keys are in other slots: a
-- script may do it on a single Redis only; on a Cluster the caller does.
local function drop_ready_hints(ready_base, wf, names)
  for _, name in ipairs(names) do redis.call('ZREM', ready_base .. name, wf) end
end

local function release_lock(lock_key, value)
  if redis.call('GET', lock_key) == value then
    redis.call('DEL', lock_key)
  end
end

-- After an actor went idle: removes its ready hint (or moves it to `nxt`, the due
-- time of its next delayed action) only if the score is still our unexpired
-- lease; see release_hint.lua. Returns 1 when changed by us, 0 when left alone.
local function release_ready_hint(ready, wf, lease, nxt, rerun)
  local cur = redis.call('ZSCORE', ready, wf)
  local now = now_ms()
  if not cur or tonumber(cur) == rerun then return 0 end
  if tonumber(cur) ~= lease or lease <= now then
    redis.call('ZADD', ready, 'LT', now, wf)
    return 0
  end
  if nxt ~= '' then
    redis.call('ZADD', ready, nxt, wf)
  else
    redis.call('ZREM', ready, wf)
  end
  return 1
end

-- Marks an actor's in-flight batch cancelled (its workflow ended: nobody will
-- deliver it) and forgets it.
local function cancel_inflight(actor_key, actions_key, ids)
  for _, id in ipairs(ids) do
    local ok, st = pcall(cjson.decode, redis.call('HGET', actions_key, id .. ':st') or '')
    if ok and type(st) == 'table' then
      st.status = 'cancelled'
      redis.call('HSET', actions_key, id .. ':st', cjson.encode(st))
    end
  end
  redis.call('HDEL', actor_key, 'inflight')
end

-- The activate step (see activate.lua for what it does and returns), shared by
-- activate.lua and pick_activate.lua.
local function activate_actor(actor_key, lock_key, mailbox, actions_key, status_key, events_key,
                              lock_value, wf, agent, ev_base, channel, maxlen, retention, batch, ttl)
  local holder = redis.call('GET', lock_key)
  if holder and holder ~= lock_value then
    return { 'busy', 0, '', '', 0, tostring(redis.call('PTTL', lock_key)) }
  end
  -- A holder equal to our value is this same call replayed after a dropped connection.
  redis.call('SET', lock_key, lock_value, 'PX', ttl)
  local got = redis.call('HMGET', status_key, 'status', 'agent:' .. agent)
  local status = got[1]
  if not status then
    -- No workflow: its keys expired (a stale hint), or it does not exist yet (on a
    -- Cluster an enqueue's pre-hint is written on the agent's node before the
    -- start script runs on the workflow's). Touch nothing of the actor: a hash made
    -- here would never expire in the first case, and a TTL put on it would later
    -- expire the live workflow's actor in the second. Its mailbox is empty either
    -- way (the start script writes status and mailbox together).
    release_lock(lock_key, lock_value)
    return { 'ended', 0, '', '', 0, '' }
  end
  if TERMINAL[status] then
    -- An actor that never ran has nothing to fence or cancel, and a hash made
    -- for it now would outlive the workflow: once the persister has put the
    -- TTLs on (retention 0 here), nothing sweeps a key made later.
    local fence = 0
    if redis.call('EXISTS', actor_key) == 1 then
      fence = redis.call('HINCRBY', actor_key, 'fence', 1)
      cancel_inflight(actor_key, actions_key, inflight_ids(redis.call('HGET', actor_key, 'inflight')))
      if retention > 0 then redis.call('PEXPIRE', actor_key, retention) end
    end
    drop_mailbox(mailbox, actions_key)
    release_lock(lock_key, lock_value)
    return { 'ended', fence, '', '', 0, '' }
  end

  if not got[2] then
    -- No action was ever queued for this agent here (an enqueue or a commit lists
    -- the agent before its first one): a hint left by a send that then failed (a
    -- start under a taken id, an action id clash, a refused commit). An actor hash
    -- made now would never expire: ending scripts and the persister find a
    -- workflow's actors through those `agent:` fields.
    release_lock(lock_key, lock_value)
    return { 'idle', 0, '', '', 0, '' }
  end
  local now = now_ms()
  local fence = redis.call('HINCRBY', actor_key, 'fence', 1)
  local snap = redis.call('HMGET', actor_key, 'snapshot', 'version', 'inflight')
  local inflight = inflight_ids(snap[3])

  local out = { 'ok', fence, snap[1] or '', snap[2] or '', 0, '' }
  if #inflight > 0 then
    -- A dead activation left these in flight: deliver them again, in order.
    local ids = {}
    for n, id in ipairs(inflight) do
      local got = redis.call('HMGET', actions_key, id, id .. ':st')
      local ok, st = pcall(cjson.decode, got[2] or '')
      if got[1] and ok and type(st) == 'table' then
        st.attempt = (tonumber(st.attempt) or 0) + 1
        st.status = 'running'
        redis.call('HSET', actions_key, id .. ':st', cjson.encode(st))
        out[#out + 1] = got[1]
        out[#out + 1] = st.attempt
        out[#out + 1] = id
        out[#out + 1] = tonumber(st.availableAt) or 0
        ids[#ids + 1] = id
        append_event(events_key, channel, maxlen, make_event(ev_base .. '.r' .. n, wf, 'action.redelivered',
          { actionId = id, agent = agent, attempt = st.attempt }, agent, id, st.attempt, '', now))
      else
        redis.call('HINCRBY', status_key, 'malformed', 1)
      end
    end
    if #ids > 0 then
      out[5] = 1
      redis.call('HSET', actor_key, 'inflight', cjson.encode(ids))
      return out
    end
    redis.call('HDEL', actor_key, 'inflight')
  end

  local claimed = claim_batch(actor_key, mailbox, actions_key, status_key, now, batch)
  if #claimed == 0 then
    release_lock(lock_key, lock_value)
    return { 'idle', fence, '', '', 0, next_at(mailbox) or '' }
  end
  for _, v in ipairs(claimed) do out[#out + 1] = v end
  return out
end
