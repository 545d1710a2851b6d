-- prune_consumers: removes the consumers of a group that hold nothing and have
-- been idle long enough (persisters gone: each process joins under a new name),
-- never the caller's own. Checked and removed atomically: between a separate
-- XINFO and XGROUP DELCONSUMER a live consumer could read entries, and
-- DELCONSUMER would drop them from the pending list, where no claim finds them.
--
-- KEYS: 1 persistence:queue
-- ARGV: 1 group  2 least idle time (ms)  3 the caller's consumer name
-- Returns: the names removed
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
-- No stream or no group yet: nothing to prune.
if type(consumers) ~= 'table' or consumers.err then return {} end
local least = tonumber(ARGV[2])
local out = {}
for _, c in ipairs(consumers) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f.name ~= ARGV[3] and tonumber(f.pending) == 0 and tonumber(f.idle) >= least then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f.name)
    out[#out + 1] = f.name
  end
end
return out
