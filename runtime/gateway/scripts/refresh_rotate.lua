-- refresh_rotate: replaces a refresh-token family's current token and its access
-- token in one step, but only if the family still holds the token the caller
-- verified (compare-and-set): of two concurrent uses of one refresh token, exactly
-- one rotates and the other is treated as reuse. And only while the user's
-- credential is still the one the family was signed in with: a family that
-- outlived a rotation (or a revocation) of its credential rotates no further.
--
-- KEYS: 1 auth:refresh:{user}  2 auth:token:{user}  3 auth:credential:{user}
-- ARGV: 1 family id  2 hash the family must still hold  3 new family JSON
--       4 new access-token id  5 new access-token JSON  6 refresh key TTL (ms)  7 token key TTL (ms)
--       8 credential id the family is bound to
-- Returns: 1 rotated, 0 the family moved on (concurrent rotation), -1 no such family,
--          -2 the user's credential is not that one any more (nothing written)
local fam_raw = redis.call('HGET', KEYS[1], ARGV[1])
if not fam_raw then return -1 end
if redis.call('HGET', KEYS[3], 'id') ~= ARGV[8] then return -2 end
local ok, fam = pcall(cjson.decode, fam_raw)
if not ok or type(fam) ~= 'table' or fam.h ~= ARGV[2] then return 0 end
if fam.at and fam.at ~= '' then redis.call('HDEL', KEYS[2], fam.at) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6], 'NX')
redis.call('PEXPIRE', KEYS[1], ARGV[6], 'GT')
redis.call('PEXPIRE', KEYS[2], ARGV[7], 'NX')
redis.call('PEXPIRE', KEYS[2], ARGV[7], 'GT')
return 1
