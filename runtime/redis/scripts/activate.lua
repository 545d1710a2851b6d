-- activate: takes the actor's lock and turns it into an activation: sets the lock
-- (the same SET PX value a single-instance Redlock acquire writes, so Redlock
-- extends and releases it), bumps the fence, and claims a batch of due actions
-- (or redelivers the batch a dead activation left in flight, each with attempt + 1).
-- Taking the lock here, in the workflow's slot, saves the separate acquire round
-- trip and makes lock + fence one atomic step.
--
-- KEYS: 1 workflow:actor:<agent>  2 lock:<agent>  3 workflow:queue:<agent>
--       4 workflow:actions  5 workflow:status  6 workflow:events
-- ARGV: 1 lock value (random, unique to this activation)  2 wf  3 agent  4 event id base  5 channel
--       6 stream maxlen  7 retention ms (0 = none)  8 batch size (most actions to claim at once)
--       9 lock ttl ms
-- Returns: { code, fence, snapshot|'', version|'', redelivered (0|1), nextDue|'', record1, attempt1, id1, ... }
--          code 'ok': lock taken and actions claimed; 'idle': nothing due, lock released;
--          'ended': the workflow is over, leftovers dropped, lock released;
--          'busy': another activation holds the lock (fence 0, nothing changed; in
--          place of nextDue, the ms the lock has left: the caller pushes the hint
--          that far instead of bouncing off the lock again and again)
local actor_key, lock_key, mailbox, actions_key, status_key, events_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local lock_value, wf, agent, ev_base, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxlen, retention, batch, ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local holder = redis.call('GET', lock_key)
if holder and holder ~= lock_value then
  return { 'busy', 0, '', '', 0, tostring(redis.call('PTTL', lock_key)) }
end
-- A holder equal to our value is this same call replayed after a dropped connection.
redis.call('SET', lock_key, lock_value, 'PX', ttl)
local now = now_ms()
local fence = redis.call('HINCRBY', actor_key, 'fence', 1)
local status = redis.call('HGET', status_key, 'status')
local snap = redis.call('HMGET', actor_key, 'snapshot', 'version', 'inflight')
local inflight = inflight_ids(snap[3])

if not status or TERMINAL[status] then
  for _, id in ipairs(inflight) do
    local ok, st = pcall(cjson.decode, redis.call('HGET', actions_key, id .. ':st') or '')
    if ok and type(st) == 'table' then
      st.status = 'cancelled'
      redis.call('HSET', actions_key, id .. ':st', cjson.encode(st))
    end
  end
  redis.call('HDEL', actor_key, 'inflight')
  drop_mailbox(mailbox, actions_key)
  if retention > 0 then redis.call('PEXPIRE', actor_key, retention) end
  release_lock(lock_key, lock_value)
  return { 'ended', fence, '', '', 0, '' }
end

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
