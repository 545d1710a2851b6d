-- dead_agents: the agent of each dead letter, read where the records live, so
-- that the sweep never carries their payloads (each up to the payload limit,
-- for up to a thousand dead letters a workflow) back to the supervisor just to
-- learn one name.
--
-- KEYS: 1 workflow:actions:{wf}
-- ARGV: the dead letters' action ids
-- Returns: one agent name per id ('' when the record is missing or names none)
local out = {}
for i, id in ipairs(ARGV) do
  local raw = redis.call('HGET', KEYS[1], id)
  local agent = nil
  if raw then
    -- Both of the runtime's encoders write id, workflowId and agent first; ids
    -- and agent names are validated, so the first match is the record's own.
    agent = string.match(raw, '^{"id":"[^"]*","workflowId":"[^"]*","agent":"([^"\\]*)"')
    if not agent and #raw <= 65536 then
      local ok, rec = pcall(cjson.decode, raw)
      if ok and type(rec) == 'table' and type(rec.agent) == 'string' then agent = rec.agent end
    end
  end
  out[i] = agent or ''
end
return out
