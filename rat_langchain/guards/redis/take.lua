-- Both buckets of one key, refilled on the Redis server's clock and charged together or not at all.
-- KEYS: requests bucket, tokens bucket, pause key, learned rates (learn.lua's hash).
-- ARGV: requests per ms, requests capacity, tokens per ms, tokens capacity, tokens wanted,
--       mode ("take" | "give" | "cap"), give-back requests (give mode), ttl ms, and the
--       caller's bounds: floors in requests per ms and tokens per ms, the longest pause in ms,
--       and whether it learns requests / tokens ("1") or holds a configured ceiling ("0").
-- take: charge both or neither; returns "0" or the wait in ms (as a string: floats survive).
-- give: add ARGV[5] tokens (negative = charge) and ARGV[7] requests back, capped at capacity.
-- cap:  lower the levels to ARGV[5] tokens / ARGV[7] requests (never raise them); -1 = skip.
-- room: raise the levels to ARGV[5] tokens / ARGV[7] requests, within capacity (never lower
--       them); -1 = skip. A burst widened into the room the server says it has left.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local r_rate, r_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local t_rate, t_cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local tokens, mode, reqs, ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
-- rates the processes learned together (learn.lua) override the caller's own view
-- (values that are not sane numbers are ignored: the caller's own view stands)
-- A key of the wrong type (anyone can write to a shared Redis) would make a call fail the script,
-- which the caller takes for "Redis is down" (with fail_closed, every call fails while it stays):
-- it is read as nothing, and a bucket or pause of the wrong type is removed.
local function read(command, key, ...)
  local v = redis.pcall(command, key, ...)
  if type(v) == 'table' and v.err then
    if key ~= KEYS[4] then redis.call('DEL', key) end
    return nil
  end
  return v
end
local learned = read('HMGET', KEYS[4], 'rpm', 'rburst', 'tpm', 'tburst') or {}
local function sane(rate, burst)
  rate, burst = tonumber(rate or ''), tonumber(burst or '')
  if rate and burst and rate >= 0 and rate < 1e12 and burst > 0 and burst <= 60 then
    return rate / 60000, rate / 60000 * burst * 1000
  end
end
-- Redis is shared, so what it holds is bounded by the caller's own configuration: for a
-- dimension the caller learns, the shared rate stands (0 = a peer found it not limited); for a
-- configured ceiling it only lowers it (a peer's 10^6, or its 0, never lifts rpm_limit: 600);
-- and never below the caller's floor (a peer's 0.001 RPM must not stall every process).
local r_floor, t_floor = tonumber(ARGV[9]) or 0, tonumber(ARGV[10]) or 0
local function bounded(own, own_cap, rate, cap, floor, learns)
  if not rate then return own, own_cap end
  if rate <= 0 then
    if learns then return 0, 0 end
    return own, own_cap
  end
  if not learns and own > 0 and rate > own then rate, cap = own, own_cap end
  if rate < floor then cap, rate = cap * floor / rate, floor end
  return rate, cap
end
local rr, rc = sane(learned[1], learned[2])
r_rate, r_cap = bounded(r_rate, r_cap, rr, rc, r_floor, ARGV[12] == '1')
local tr, tc = sane(learned[3], learned[4])
t_rate, t_cap = bounded(t_rate, t_cap, tr, tc, t_floor, ARGV[13] == '1')
local function level(key, rate, cap)
  if rate <= 0 then return nil end
  local v = read('HMGET', key, 'level', 'ts') or {}
  local lvl, ts = tonumber(v[1]), tonumber(v[2])
  -- garbage (not a number, not finite) is a fresh bucket; a time in the future is now; a debt
  -- is at most a minute's refill, whatever a peer (or anyone) wrote
  if lvl == nil or ts == nil or lvl ~= lvl or ts ~= ts or lvl == math.huge then return cap end
  if ts > now then ts = now end
  lvl = math.max(lvl, -rate * 60000)
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
if mode == 'room' then
  if rl ~= nil and reqs >= 0 then store(KEYS[1], math.max(rl, math.min(r_cap, reqs))) end
  if tl ~= nil and tokens >= 0 then store(KEYS[2], math.max(tl, math.min(t_cap, tokens))) end
  return '0'
end
if mode == 'cap' then
  if rl ~= nil and reqs >= 0 then store(KEYS[1], math.min(rl, reqs)) end
  if tl ~= nil and tokens >= 0 then store(KEYS[2], math.min(tl, tokens)) end
  return '0'
end
local wait = 0
local paused = tonumber(read('GET', KEYS[3]) or '0') or 0
if paused ~= paused then paused = 0 end
-- a pause is at most the caller's own max_server_wait_s, whoever set it (and whatever to):
-- one past it is cut back in Redis, with an expiry, so it ends when this reader's longest
-- would (only bounding each wait left a pause of 10^30 ms holding every call, wait after wait)
local longest = math.max(0, tonumber(ARGV[11]) or 0)
if paused > now + longest then
  paused = now + longest
  redis.call('SET', KEYS[3], tostring(paused), 'PX', math.ceil(longest) + 1)
end
if paused > now then wait = paused - now end
if rl ~= nil then
  -- a bucket smaller than one request (under 60 RPM with a 1 s burst) waits for a full bucket
  -- and takes the request into debt, as the tokens do: waiting for 1 would never end
  local need = math.min(1, r_cap)
  if rl < need then wait = math.max(wait, (need - rl) / r_rate) end
end
if tl ~= nil then
  local need = math.min(tokens, t_cap)
  if tl < need then wait = math.max(wait, (need - tl) / t_rate) end
end
if wait > 0 then return tostring(wait) end
if rl ~= nil then store(KEYS[1], rl - 1) end
if tl ~= nil then store(KEYS[2], tl - tokens) end
return '0'
