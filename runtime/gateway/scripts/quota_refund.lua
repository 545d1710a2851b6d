-- quota_refund: gives back one started-workflow unit of the daily quota, on the
-- day it was taken: a refund that lands after midnight UTC must not lower the
-- new day's count. Read and decrement in one step, so two refunds cannot both
-- see the same count.
--
-- KEYS: 1 auth:rate:{user}
-- ARGV: 1 day stamp (YYYY-MM-DD, UTC) the unit was counted on
-- Returns: 1 refunded, 0 nothing to refund (another day, or none counted)
local got = redis.call('HMGET', KEYS[1], 'qday', 'qn')
local n = tonumber(got[2] or '0') or 0
if got[1] ~= ARGV[1] or n <= 0 then return 0 end
redis.call('HSET', KEYS[1], 'qn', n - 1)
return 1
