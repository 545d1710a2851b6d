-- lease: leases one actor's ready hint for this process, like pick does for the
-- due members it takes, but for an actor the process was handed directly (a commit
-- in this process sent it work). Plain ZADD: whatever the score was, the actor is
-- about to be activated, and a crash leaves the hint due when the lease ends.
--
-- KEYS: 1 agent:ready:<agent>
-- ARGV: 1 wf  2 lease ms
-- Returns: the lease score (server time + lease)
local until_ms = now_ms() + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], until_ms, ARGV[1])
return score_str(until_ms)
