-- sweep_done: one page of the leader's pass over a live workflow's action
-- records, removing those of `done` actions finished over `min age` ago whose
-- `action.completed` the event stream no longer holds. The persister's trim
-- removes them only as it trims their completion, so it sees each one once: a
-- workflow that turned its stream over faster than the hour, and any with
-- persistence off, kept them for good.
--
-- The removal is the persister's own rule, forget_done.lua, which sweep.ts puts
-- in front of this script as a function: only records still `done` and
-- finished over `min age` ago go (a send with a caller's own action id stays
-- idempotent while a caller would still retry). This script only narrows its
-- age to "finished before the stream's first entry": the commit that marks an
-- action done appends its completion in the same script, with a stream id at
-- least its `finishedAt` and, unless Redis's clock went back, within that
-- script's run of it. So `finishedAt` over STREAM_SLACK_MS before the first
-- entry's time puts the completion before that entry, trimmed (forget_done
-- reads TIME to the second, which makes the margin one to two seconds). With
-- persistence on the stream is trimmed only past entries Neo4j holds, so the
-- persister, which reads a completion's record as it writes the event, has
-- had it; with persistence off nothing reads it.
--
-- KEYS: 1 system:leader:term  2 workflow:status:{wf}  3 workflow:actions:{wf}  4 workflow:events:{wf}
-- ARGV: 1 term  2 min age (ms)  3 HSCAN cursor  4 HSCAN count
-- Returns: { next cursor ('0': the workflow is done with), records removed }
-- Errors: TROUPE_DEPOSED the term is no longer current
local STREAM_SLACK_MS = 1000
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('TROUPE_DEPOSED term ' .. ARGV[1] .. ' is over')
end
-- An ended workflow's records go with its keys (retention), and a workflow
-- gone is gone: nothing to page through.
local status = redis.call('HGET', KEYS[2], 'status')
if not status or status == 'completed' or status == 'failed' or status == 'cancelled' then
  return { '0', 0 }
end
-- Only the state fields: the records beside them carry the payloads.
local page = redis.call('HSCAN', KEYS[3], ARGV[3], 'MATCH', '*:st', 'COUNT', ARGV[4])
local args = { 0 }
for i = 1, #page[2], 2 do
  -- A field `x:st` may be the record of an action named `x:st`: forget_done
  -- then reads `x:st` as a state, finds no `done` in it, and keeps it.
  args[#args + 1] = string.sub(page[2][i], 1, -4)
end
if #args == 1 then return { page[1], 0 } end
local min_age = tonumber(ARGV[2])
local first = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)[1]
if first then
  -- forget_done reads TIME again, to the second: that only makes it stricter.
  -- Read here to the millisecond, lest a second passing in between take the margin.
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local first_ms = tonumber(string.match(first[1], '^(%d+)'))
  min_age = math.max(min_age, now - first_ms + STREAM_SLACK_MS)
end
args[1] = min_age
return { page[1], forget_done({ KEYS[3] }, args) }
