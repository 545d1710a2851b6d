-- rate_limit: one GCRA bucket per user and bucket name, plus a daily quota of
-- started workflows, decided and recorded atomically. Denied requests change
-- nothing, so a client hammering a 429 does not push its own recovery further out.
--
-- KEYS: 1 auth:rate:{user}  2 auth:credential:{user} (per-user overrides: fields rate, burst, daily)
-- ARGV: 1 now (ms)  2 bucket name ('req' | 'auth')  3 default rate per second (0 = no rate limit)
--       4 default burst  5 quota cost (1 when starting a workflow, else 0)  6 default daily quota (0 = none)
--       7 day stamp (YYYY-MM-DD, UTC)  8 ms left in that day  9 '1' to apply the user's overrides
--       10 credential id the caller's token or session was signed in with ('' when unknown: not checked)
-- Returns: { -1 } when the user has no credential (revoked or unknown), or one other than ARGV[10]
--          (rotated since that sign-in): nothing is written; else
--          { allowed 1|0, denied by ('' | 'rate' | 'quota'), burst, remaining, reset ms,
--            retry-after ms, daily quota, quota remaining, rate per second (string) }
-- GCRA: each request moves the "theoretical arrival time" (tat) forward by one
-- emission interval T = 1000/rate; a request is allowed while tat - now <= burst * T.
local rate_key, cred_key = KEYS[1], KEYS[2]
-- Unknown users must not be able to create rate keys (memory) by guessing names.
if redis.call('EXISTS', cred_key) == 0 then return { -1 } end
-- Checked here, in the round trip every request makes anyway: a token or session
-- that outlived a rotation of the credential it came from is refused like a
-- revoked one, and so is one whose record a rotation deleted after it was read.
if ARGV[10] and ARGV[10] ~= '' and redis.call('HGET', cred_key, 'id') ~= ARGV[10] then return { -1 } end
local now = tonumber(ARGV[1])
local bucket = ARGV[2]
local rate = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local qcost = tonumber(ARGV[5])
local daily = tonumber(ARGV[6])
local day, day_left = ARGV[7], tonumber(ARGV[8])

if ARGV[9] == '1' then
  local o = redis.call('HMGET', cred_key, 'rate', 'burst', 'daily')
  if o[1] and tonumber(o[1]) then rate = tonumber(o[1]) end
  if o[2] and tonumber(o[2]) then burst = tonumber(o[2]) end
  if o[3] and tonumber(o[3]) then daily = tonumber(o[3]) end
end
-- GCRA admits nothing with a burst below one request: every request would wait
-- for a slot that never opens. One is strict pacing at the rate.
if burst < 1 then burst = 1 end

local tat_field = 'tat:' .. bucket
local remaining, reset, retry, new_tat = burst, 0, 0, nil
local denied = ''
local tau, interval, tat = 0, 0, now
if rate > 0 then
  interval = 1000 / rate
  tau = interval * burst
  tat = tonumber(redis.call('HGET', rate_key, tat_field) or '0')
  if tat < now then tat = now end
  local candidate = tat + interval
  local allow_at = candidate - tau
  if allow_at > now then
    denied = 'rate'
    retry = math.ceil(allow_at - now)
    remaining = 0
    reset = math.ceil(tat - now)
  else
    new_tat = candidate
    remaining = math.floor((tau - (candidate - now)) / interval)
    reset = math.ceil(candidate - now)
  end
end

local used = 0
if daily > 0 then
  if redis.call('HGET', rate_key, 'qday') == day then used = tonumber(redis.call('HGET', rate_key, 'qn') or '0') end
  if denied == '' and qcost > 0 and used + qcost > daily then
    denied = 'quota'
    retry = day_left
    -- Refused, so this request takes no slot of the burst either.
    if new_tat then
      remaining = math.floor((tau - (tat - now)) / interval)
      reset = math.ceil(tat - now)
      new_tat = nil
    end
  end
end

if denied == '' then
  local ttl = 0
  if new_tat then
    redis.call('HSET', rate_key, tat_field, new_tat)
    ttl = math.ceil(tau) + 1000
  end
  if daily > 0 and qcost > 0 then
    used = used + qcost
    redis.call('HSET', rate_key, 'qday', day, 'qn', used)
    if day_left + 60000 > ttl then ttl = day_left + 60000 end
  end
  if ttl > 0 then
    -- Only ever lengthen the TTL: another bucket in this hash may need longer.
    redis.call('PEXPIRE', rate_key, ttl, 'NX')
    redis.call('PEXPIRE', rate_key, ttl, 'GT')
  end
end

local quota_left = 0
if daily > 0 then quota_left = math.max(daily - used, 0) end
local allowed = 0
if denied == '' then allowed = 1 end
return { allowed, denied, burst, remaining, reset, retry, daily, quota_left, tostring(rate) }
