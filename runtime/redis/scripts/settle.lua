-- settle: the follow-ups of a commit that belong to this actor, run right after
-- it in the same pipeline, on a single Redis only: its keys span slots (a Cluster
-- sends the same writes as separate phased commands instead). It learns the
-- commit's outcome from Redis, not from the reply it has not seen: the commit's
-- `committed` marker says it took effect, which stream entries it appended, and
-- whether it claimed a next batch (the actor stays ours: the hint keeps our
-- lease) or let the lock go. That is the commit's own word, not the lock's: a
-- commit can claim a next batch after our lock ran out unseen (it checks the
-- fence, not the lock), and that batch must keep its hint.
-- Saves the separate release round trip at the end of every activation. After
-- a commit that ended the workflow it also removes the other agents' ready
-- hints the commit listed (their keys are in other slots, hence here).
--
-- KEYS: 1 workflow:actor:<agent>  2 workflow:queue:<agent>  3 agent:ready:<agent>  4 persistence:queue
-- ARGV: 1 wf  2 the commit's event id base  3 our lease on the hint
--       4 a lease this process took for a rerun, or ''  5 '1': append the persistence pointer
-- Returns: { 'skip' } when the commit did not take effect (fence, stale action, error);
--          { 'held' } when it claimed the next batch;
--          { 'released', 1|0 } otherwise, with release_hint's answer
local marker = redis.call('HGET', KEYS[1], 'committed')
if not marker then return { 'skip' } end
local base, first, last, code = string.match(marker, '^(%S+) (%S*) (%S*) (%a+)$')
if base ~= ARGV[2] then return { 'skip' } end
if ARGV[5] == '1' and first ~= '' then
  redis.call('XADD', KEYS[4], '*', 'wf', ARGV[1], 'from', first, 'to', last)
end
if code == 'next' then return { 'held' } end
if code == 'ended' then
  -- A commit that ended the workflow named the other agents whose ready hints
  -- are to go (commit.lua, unheld_agents): their keys are the ready key with
  -- this agent's name (the actor key's tail, after the workflow's {wf}:) swapped.
  local others = redis.call('HGET', KEYS[1], 'unhint')
  local _, tag_end = string.find(KEYS[1], '{' .. ARGV[1] .. '}:', 1, true)
  if others and tag_end then
    local agent = string.sub(KEYS[1], tag_end + 1)
    local names = {}
    for name in string.gmatch(others, '%S+') do names[#names + 1] = name end
    drop_ready_hints(string.sub(KEYS[3], 1, #KEYS[3] - #agent), ARGV[1], names)
  end
end
local nxt = next_at(KEYS[2]) or ''
return { 'released', release_ready_hint(KEYS[3], ARGV[1], tonumber(ARGV[3]), nxt, tonumber(ARGV[4])) }
