-- Both buckets of one key, refilled on the Redis server's clock and charged together or not at all.
-- KEYS: requests bucket, tokens bucket, pause key, learned rates (learn.lua's hash).
-- ARGV: requests per ms, requests capacity, tokens per ms, tokens capacity, tokens wanted,
--       mode ("take" | "give" | "cap"), give-back requests (give mode), ttl ms.
-- take: charge both or neither; returns "0" or the wait in ms (as a string: floats survive).
-- give: add ARGV[5] tokens (negative = charge) and ARGV[7] requests back, capped at capacity.
-- cap:  lower the levels to ARGV[5] tokens / ARGV[7] requests (never raise them); -1 = skip.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local r_rate, r_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local t_rate, t_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, mode, reqs, ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
-- rates the processes learned together (learn.lua) override the caller's own view
-- (values that are not sane numbers are ignored: the caller's own view stands)
local learned = redis.call('HMGET', KEYS[4], 'rpm', 'rburst', 'tpm', 'tburst')
local function sane(rate, burst)
  rate, burst = tonumber(rate or ''), tonumber(burst or '')
  if rate and burst and rate >= 0 and rate < 1e12 and burst > 0 and burst <= 60 then
    return rate / 60000, rate / 60000 * burst * 1000
  end
end
local rr, rc = sane(learned[1], learned[2])
if rr then r_rate, r_cap = rr, rc end
local tr, tc = sane(learned[3], learned[4])
if tr then t_rate, t_cap = tr, tc end
local function level(key, rate, cap)
  if rate <= 0 then return nil end
  local v = redis.call('HMGET', key, 'level', 'ts')
  local lvl, ts = tonumber(v[1]), tonumber(v[2])
  if lvl == nil then return cap end
  return math.min(cap, lvl + math.max(0, now - ts) * rate)
end
local function store(key, lvl)
  redis.call('HSET', key, 'level', tostring(lvl), 'ts', tostring(now))
  redis.call('PEXPIRE', key, ttl)
end
local rl = level(KEYS[1], r_rate, r_cap)
local tl = level(KEYS[2], t_rate, t_cap)
if mode == 'give' then
  if rl ~= nil then store(KEYS[1], math.min(r_cap, rl + reqs)) end
  if tl ~= nil then store(KEYS[2], math.min(t_cap, tl + tokens)) end
  return '0'
end
if mode == 'cap' then
  if rl ~= nil and reqs >= 0 then store(KEYS[1], math.min(rl, reqs)) end
  if tl ~= nil and tokens >= 0 then store(KEYS[2], math.min(tl, tokens)) end
  return '0'
end
local wait = 0
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then wait = paused - now end
if rl ~= nil and rl < 1 then wait = math.max(wait, (1 - rl) / r_rate) end
if tl ~= nil then
  local need = math.min(tokens, t_cap)
  if tl < need then wait = math.max(wait, (need - tl) / t_rate) end
end
if wait > 0 then return tostring(wait) end
if rl ~= nil then store(KEYS[1], rl - 1) end
if tl ~= nil then store(KEYS[2], tl - tokens) end
return '0'
