-- pick_activate: pick.lua and activate.lua in one call, on a single Redis only (it
-- touches the run queue and the picked workflows' keys, which a Cluster keeps in
-- different slots). Leases up to N due members of the agent's run queue, as pick
-- does, and activates each picked actor, as activate does, so that a worker goes
-- from "something is due" to delivering in one round trip instead of two. The
-- workflow keys are built from templates (the key module's names with the id cut
-- out), so keys.ts stays their only definition.
--
-- KEYS: 1 agent:ready:<agent>
-- ARGV: 1 max count  2 lease ms  3 agent  4 lock value prefix (each activation's
--       value is prefix .. a 4-digit hex index)  5 event id base  6 stream maxlen
--       7 retention ms  8 batch size  9 lock ttl ms
--       10..23 prefix and suffix of: actor, lock, mailbox, actions, status, events
--       key, and the workflow channel
--       24.. workflows whose actor is active in the calling process: leased only,
--       never activated here (the caller runs them again when they end, as after pick)
-- Returns: { nextDue|'', now, wf1, lease1, activation1, wf2, ... } where each
--          activation is activate.lua's reply, { 'error', message } when it failed,
--          { 'local' } for an actor active in the caller, or { 'invalid' } for a member that is not a workflow id (it
--          is not activated: the caller drops it).
local ready = KEYS[1]
local n, lease, agent = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local lock_prefix, ev_base = ARGV[4], ARGV[5]
local maxlen, retention, batch, ttl = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local function key(i, wf) return ARGV[8 + i * 2] .. wf .. ARGV[9 + i * 2] end

local here = {}
for i = 24, #ARGV do here[ARGV[i]] = true end

local now = now_ms()
local out = { '', tostring(now) }
local due = {}
if n > 0 then due = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, n) end
local until_ms = now + lease
for i, wf in ipairs(due) do
  redis.call('ZADD', ready, until_ms, wf)
  out[#out + 1] = wf
  out[#out + 1] = score_str(until_ms)
  -- The same syntax keys.ts accepts for a workflow id; anything else would make
  -- junk keys out of a hand-written member.
  if #wf > 64 or not string.match(wf, '^[%w_%-]+$') then
    out[#out + 1] = { 'invalid' }
  elseif here[wf] then
    out[#out + 1] = { 'local' }
  else
    -- One actor's bad data (a hand-written field) fails that activation only, as
    -- it would in activate.lua, not the other actors of this pick.
    local ok, res = pcall(activate_actor, key(1, wf), key(2, wf), key(3, wf), key(4, wf), key(5, wf), key(6, wf),
      lock_prefix .. string.format('%04x', i), wf, agent, ev_base .. '.' .. i, key(7, wf), maxlen, retention, batch, ttl)
    if ok then
      out[#out + 1] = res
    else
      local msg = type(res) == 'table' and (res.err or 'error') or tostring(res)
      out[#out + 1] = { 'error', msg }
    end
  end
end
local first = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
out[1] = first[2] or ''
return out
