-- KEYS: the workers' sorted set. ARGV: this worker's id, how long a silent worker counts (ms).
-- Marks this worker alive now, forgets the silent ones, answers how many are alive.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
-- a member "alive" in the future was not written by a heartbeat: it would never expire
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. tostring(now + ttl), '+inf')
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl))
return redis.call('ZCARD', KEYS[1])
