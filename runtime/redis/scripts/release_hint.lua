-- release_hint: after an actor went idle, removes its run-queue member (or moves it
-- to the time its next delayed action comes due), but only if the score is still
-- the lease we set and that lease has not run out. Any other score means someone
-- wrote the hint while we held the actor (an enqueue, a commit's send, a process
-- that bounced off our lock and pushed it to our lock's end): it may cover work we
-- did not claim, so it is left due now (ZADD LT: never later than it was) for a
-- second look. An expired lease may have been overtaken unseen: left as it is.
--
-- On a single Redis the caller also names the actor's mailbox, and the next due
-- time is the earlier of the caller's and the mailbox's own: a send that landed
-- after the caller looked may hold an action there without moving the hint (a
-- held join's hint write is ZADD LT at its deadline, which leaves a lease below
-- it as it is), and a release that trusted the caller's '' deleted the only hint
-- of that action. A Cluster keeps the mailbox in another slot: there the
-- caller's view still decides (a known limit of the Cluster, docs/architecture.md).
--
-- KEYS: 1 agent:ready:<agent>  [2 workflow:queue:<agent> (single Redis only)]
-- ARGV: 1 wf  2 our lease score  3 next due score or '' (none)
--       4 a lease this process took for a rerun of the actor, or '': left as it is
-- Returns: 1 when the hint was changed by us, 0 when it was left for a second look
local nxt = ARGV[3]
if KEYS[2] then
  local due = next_at(KEYS[2])
  if due and (nxt == '' or tonumber(due) < tonumber(nxt)) then nxt = due end
end
return release_ready_hint(KEYS[1], ARGV[1], tonumber(ARGV[2]), nxt, tonumber(ARGV[4]))
