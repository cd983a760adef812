-- A try at a chat visitor's e-mail claim code (router/profiles/claims.py):
-- counts the attempt, atomically, on a claim that exists (HINCRBY alone
-- would create a claim that never expires).
-- KEYS[1]: the claim -> {attempts, email, mac, expires_at} or nil
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local f = redis.call('HMGET', KEYS[1], 'email', 'mac', 'expires_at')
return {n, f[1], f[2], f[3]}
