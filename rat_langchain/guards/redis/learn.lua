-- The rates every process sharing one limit has learned, in one hash per key (KEYS[1]).
-- ARGV: mode ("drop" | "set"), the epoch the caller last saw, ttl ms, then requests per minute,
--       requests burst s, tokens per minute, tokens burst s (per minute 0 = not limited).
-- drop: a 429 seen by the caller: rates only go down, and the epoch moves on.
-- set:  a rate learned without a 429 (announced, grown): written only if the caller has seen
--       the latest drop (its epoch is current), so a process that missed a 429 cannot undo it.
-- Answers the epoch and the four values as they now stand ('' where none is stored).
-- Redis is shared, so the hash is untrusted: a key of another type is replaced (an error here
-- would read as "Redis is down"), an epoch no script wrote (negative, fractional, huge) is 0.
local h = KEYS[1]
local mode, seen, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local fields = {'rpm', 'rburst', 'tpm', 'tburst'}
if redis.call('TYPE', h).ok ~= 'hash' then redis.call('DEL', h) end
local epoch = tonumber(redis.call('HGET', h, 'epoch') or '0') or 0
if not (epoch >= 0 and epoch < 1e15 and epoch == math.floor(epoch)) then epoch = 0 end
if mode == 'drop' then
  for i, f in ipairs(fields) do
    local v = tonumber(ARGV[3 + i])
    local cur = tonumber(redis.call('HGET', h, f) or '')
    local lowers = (f == 'rpm' or f == 'tpm') and cur ~= nil and cur > 0 and (v <= 0 or v > cur)
    if not lowers then redis.call('HSET', h, f, ARGV[3 + i]) end
  end
  epoch = epoch + 1
  redis.call('HSET', h, 'epoch', tostring(epoch))
elseif seen == epoch then
  for i, f in ipairs(fields) do redis.call('HSET', h, f, ARGV[3 + i]) end
  redis.call('HSET', h, 'epoch', tostring(epoch))
end
redis.call('PEXPIRE', h, ttl)
local out = {tostring(epoch)}
for _, f in ipairs(fields) do out[#out + 1] = redis.call('HGET', h, f) or '' end
return out
