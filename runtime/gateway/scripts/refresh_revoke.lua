-- refresh_revoke: ends a refresh-token family (logout, or reuse detected per
-- RFC 9700): deletes the family and the access token it last issued, together.
--
-- KEYS: 1 auth:refresh:{user}  2 auth:token:{user}
-- ARGV: 1 family id
-- Returns: 1 revoked, 0 no such family
local fam_raw = redis.call('HGET', KEYS[1], ARGV[1])
if not fam_raw then return 0 end
local ok, fam = pcall(cjson.decode, fam_raw)
if ok and type(fam) == 'table' and fam.at and fam.at ~= '' then redis.call('HDEL', KEYS[2], fam.at) end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
