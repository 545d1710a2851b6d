-- fenced: runs a short list of writes only while the caller's leader term is still
-- the current one, atomically with that check. A leader that was paused past its
-- lease (GC, SIGSTOP, a slow network) and lost the election in the meantime gets
-- TROUPE_DEPOSED instead of overwriting its successor's work.
--
-- KEYS: 1 system:leader:term  2.. the keys the writes touch
-- ARGV: 1 term  2 JSON array of writes [command, keyIndex, arg, ...]; keyIndex points
--       into KEYS (0 for PUBLISH, whose first argument is a channel)
-- Returns: the reply of each write, in order
-- Errors: TROUPE_DEPOSED the term is no longer current | TROUPE_BADOP command not allowed
local ALLOWED = { DEL = true, HSET = true, HDEL = true, PEXPIRE = true, ZADD = true, ZREM = true, PUBLISH = true }
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return redis.error_reply('TROUPE_DEPOSED term ' .. ARGV[1] .. ' is over (current ' .. tostring(current) .. ')')
end
local writes = cjson.decode(ARGV[2])
-- Every command is checked before the first write: a refused one must not leave
-- the writes ahead of it applied (a script's writes are not rolled back).
for _, w in ipairs(writes) do
  if not ALLOWED[w[1]] then return redis.error_reply('TROUPE_BADOP ' .. tostring(w[1])) end
  local idx = tonumber(w[2])
  if not idx or (idx > 0 and not KEYS[idx]) or (idx <= 0 and w[1] ~= 'PUBLISH') then
    return redis.error_reply('TROUPE_BADOP ' .. tostring(w[1]) .. ' without a key')
  end
end
local out = {}
for i, w in ipairs(writes) do
  local cmd, idx = w[1], tonumber(w[2])
  local args = {}
  if idx > 0 then args[1] = KEYS[idx] end
  for j = 3, #w do args[#args + 1] = w[j] end
  out[i] = redis.call(cmd, unpack(args))
end
return out
