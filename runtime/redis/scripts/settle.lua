-- settle: the follow-ups of a commit that belong to this actor, run right after
-- it in the same pipeline, on a single Redis only: its keys span slots (a Cluster
-- sends the same writes as separate phased commands instead). It learns the
-- commit's outcome from Redis, not from the reply it has not seen: the commit's
-- `committed` marker says it took effect and which stream entries it appended,
-- and the lock says whether it claimed a next batch (still ours) or let go.
-- Saves the separate release round trip at the end of every activation.
--
-- KEYS: 1 workflow:actor:<agent>  2 lock:<agent>  3 workflow:queue:<agent>
--       4 agent:ready:<agent>  5 persistence:queue
-- ARGV: 1 wf  2 lock value  3 the commit's event id base  4 our lease on the hint
--       5 a lease this process took for a rerun, or ''  6 '1': append the persistence pointer
-- Returns: { 'skip' } when the commit did not take effect (fence, stale action, error);
--          { 'held' } when it claimed the next batch (the lock is still ours);
--          { 'released', 1|0 } otherwise, with release_hint's answer
local marker = redis.call('HGET', KEYS[1], 'committed')
if not marker then return { 'skip' } end
local base, first, last = string.match(marker, '^(%S+) (%S*) (%S*)$')
if base ~= ARGV[3] then return { 'skip' } end
if ARGV[6] == '1' and first ~= '' then
  redis.call('XADD', KEYS[5], '*', 'wf', ARGV[1], 'from', first, 'to', last)
end
if redis.call('GET', KEYS[2]) == ARGV[2] then return { 'held' } end
local nxt = next_at(KEYS[3]) or ''
return { 'released', release_ready_hint(KEYS[4], ARGV[1], tonumber(ARGV[4]), nxt, tonumber(ARGV[5])) }
