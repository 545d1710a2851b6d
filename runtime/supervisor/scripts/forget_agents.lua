-- forget_agents: removes registrations of agents nobody hosts any more from
-- `system:agents`, each only if it still holds the value the leader judged: a
-- runtime that registered the agent again since (a new release bringing it
-- back) rewrote it, and keeps it.
--
-- KEYS: 1 system:leader:term  2 system:agents
-- ARGV: 1 term  2.. pairs of agent name, registration as read
-- Returns: the names removed
-- Errors: TROUPE_DEPOSED the term is no longer current
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('TROUPE_DEPOSED term ' .. ARGV[1] .. ' is over')
end
local out = {}
for i = 2, #ARGV - 1, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[2], ARGV[i])
    out[#out + 1] = ARGV[i]
  end
end
return out
