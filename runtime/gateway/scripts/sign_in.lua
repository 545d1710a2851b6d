-- sign_in: stores what a sign-in hands out (an access token and its new refresh
-- family, or a session) only if the credential it was checked against is still
-- the user's current one. The gateway checks the credential first (in constant
-- time, with a precise answer for an expired one) and then calls this: a
-- `troupe auth issue --rotate` or `revoke` landing between the two must win,
-- since it already deleted every token and family the user had and a record
-- written after it would outlive it. Compares the stored id and SHA-256 (of a
-- credential already verified, so no secret is compared here).
--
-- KEYS: 1 auth:credential:{user}  2 auth:token:{user}  3 auth:refresh:{user}
-- ARGV: 1 credential id the records are bound to  2 its SHA-256 ('' when the caller vouches for the id alone)
--       3 token id  4 token JSON  5 token key TTL (ms)
--       6 family id ('' for a session)  7 family JSON  8 refresh key TTL (ms)
-- Returns: { 0 } the credential is not that one any more (rotated, revoked or expired): nothing written,
--          else { 1, fields in auth:token, fields in auth:refresh (0 for a session) }
local cur = redis.call('HMGET', KEYS[1], 'id', 'h')
if cur[1] ~= ARGV[1] then return { 0 } end
if ARGV[2] ~= '' and cur[2] ~= ARGV[2] then return { 0 } end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
-- Only ever lengthen a key's TTL: it covers the longest-lived record in it.
redis.call('PEXPIRE', KEYS[2], ARGV[5], 'NX')
redis.call('PEXPIRE', KEYS[2], ARGV[5], 'GT')
local families = 0
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[7])
  redis.call('PEXPIRE', KEYS[3], ARGV[8], 'NX')
  redis.call('PEXPIRE', KEYS[3], ARGV[8], 'GT')
  families = redis.call('HLEN', KEYS[3])
end
return { 1, redis.call('HLEN', KEYS[2]), families }
