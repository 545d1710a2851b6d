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
-- Returns: { code, fence, snapshot|'', version|'', redelivered (0|1), nextDue|'', record1, attempt1, id1, dueAt1, ... }
--          code 'ok': lock taken and actions claimed; 'idle': nothing due, lock released;
--          'ended': the workflow is over, leftovers dropped, lock released (or there is
--          no workflow: fence 0, nothing of the actor touched);
--          'busy': another activation holds the lock (fence 0, nothing changed; in
--          place of nextDue, the ms the lock has left: the caller pushes the hint
--          that far instead of bouncing off the lock again and again)
local lock_value, wf, agent, ev_base, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
return activate_actor(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], lock_value, wf, agent, ev_base, channel,
  tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]))
