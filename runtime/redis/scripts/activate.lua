-- activate: turns a lock we hold into an activation of the actor: checks the lock
-- value, bumps the fence, and claims the first due action (or redelivers the one a
-- dead activation left in flight, with attempt + 1).
--
-- KEYS: 1 workflow:actor:<agent>  2 lock:<agent>  3 workflow:queue:<agent>
--       4 workflow:actions  5 workflow:status  6 workflow:events
-- ARGV: 1 lock value  2 wf  3 agent  4 event id base  5 channel  6 stream maxlen  7 retention ms (0 = none)
-- Returns: { code, fence, snapshot|'', version|'', record|'', attempt, actionId|'', nextDue|'', redelivered (0|1) }
--          code 'ok': an action is claimed; 'idle': nothing due, lock released;
--          'ended': the workflow is over, leftovers dropped, lock released
-- Errors: TROUPE_NOTLOCKED the lock is not (or no longer) ours
local actor_key, lock_key, mailbox, actions_key, status_key, events_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local lock_value, wf, agent, ev_base, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxlen, retention = tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('GET', lock_key) ~= lock_value then
  return redis.error_reply('TROUPE_NOTLOCKED lock for ' .. agent .. ' in ' .. wf .. ' is not held by this activation')
end
local now = now_ms()
local fence = redis.call('HINCRBY', actor_key, 'fence', 1)
local status = redis.call('HGET', status_key, 'status')
local snap = redis.call('HMGET', actor_key, 'snapshot', 'version', 'inflight')

if not status or TERMINAL[status] then
  local inflight = snap[3]
  if inflight then
    redis.call('HDEL', actor_key, 'inflight')
    local ok, st = pcall(cjson.decode, redis.call('HGET', actions_key, inflight .. ':st') or '')
    if ok and type(st) == 'table' then
      st.status = 'cancelled'
      redis.call('HSET', actions_key, inflight .. ':st', cjson.encode(st))
    end
  end
  drop_mailbox(mailbox, actions_key)
  if retention > 0 then redis.call('PEXPIRE', actor_key, retention) end
  release_lock(lock_key, lock_value)
  return { 'ended', fence, '', '', '', 0, '', '', 0 }
end

local claimed
local redelivered = 0
local inflight = snap[3]
if inflight then
  local rec = redis.call('HGET', actions_key, inflight)
  local ok, st = pcall(cjson.decode, redis.call('HGET', actions_key, inflight .. ':st') or '')
  if rec and ok and type(st) == 'table' then
    st.attempt = (tonumber(st.attempt) or 0) + 1
    st.status = 'running'
    redis.call('HSET', actions_key, inflight .. ':st', cjson.encode(st))
    claimed = { rec, st.attempt, inflight }
    redelivered = 1
    append_event(events_key, channel, maxlen, make_event(ev_base .. '.r', wf, 'action.redelivered',
      { actionId = inflight, agent = agent, attempt = st.attempt }, agent, inflight, st.attempt, '', now))
  else
    redis.call('HDEL', actor_key, 'inflight')
    redis.call('HINCRBY', status_key, 'malformed', 1)
  end
end
if not claimed then claimed = claim_next(actor_key, mailbox, actions_key, status_key, now) end
if not claimed then
  release_lock(lock_key, lock_value)
  return { 'idle', fence, '', '', '', 0, '', next_at(mailbox) or '', 0 }
end
return { 'ok', fence, snap[1] or '', snap[2] or '', claimed[1], claimed[2], claimed[3], '', redelivered }
