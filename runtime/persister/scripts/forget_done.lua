-- forget_done: removes the records of finished actions of a workflow whose
-- events the persister has written to Neo4j and trimmed from the stream (their
-- `action.completed` among them). A workflow that never ends kept two fields per
-- action in `workflow:actions:{wf}` for good (about 0.7 MB a day for a
-- one-minute timer); Neo4j holds them now. Only actions still `done` go: a
-- dead letter stays (a retry needs its record), and so does anything else. And
-- only those finished at least `min age` ago: a send with a caller's own action
-- id is idempotent while the first one's record exists, and a caller retries
-- one whose outcome it does not know within that time.
--
-- KEYS: 1 workflow:actions:{wf}
-- ARGV: 1 min age (ms), then the action ids
-- Returns: how many were removed
local t = redis.call('TIME')
local before = tonumber(t[1]) * 1000 - tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local ok, st = pcall(cjson.decode, redis.call('HGET', KEYS[1], id .. ':st') or '')
  if ok and type(st) == 'table' and st.status == 'done' and (tonumber(st.finishedAt) or before) < before then
    redis.call('HDEL', KEYS[1], id, id .. ':st')
    n = n + 1
  end
end
return n
