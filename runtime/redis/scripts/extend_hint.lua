-- extend_hint: moves an active actor's lease on its ready hint forward, but only
-- while the score is still the lease we set. Any other score is someone else's
-- due time (an enqueue or a commit sent work meanwhile): it stays, and the release
-- at the end of the activation sees it and leaves it for a second look. A plain
-- ZADD here could land after such an enqueue (nothing orders it against a commit
-- on another Cluster node) and turn the due hint back into a lease we then delete.
--
-- KEYS: 1 agent:ready:<agent>
-- ARGV: 1 wf  2 our current lease score  3 lease ms
-- Returns: the new lease score, or '' when the hint was left alone
local ready, wf = KEYS[1], ARGV[1]
local cur = redis.call('ZSCORE', ready, wf)
if not cur or tonumber(cur) ~= tonumber(ARGV[2]) then return '' end
local until_ms = now_ms() + tonumber(ARGV[3])
redis.call('ZADD', ready, until_ms, wf)
return score_str(until_ms)
