-- Hold a key: KEYS[1] is its pause key, ARGV[1] the pause in ms (never shortens a longer one).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ms = tonumber(ARGV[1])
local untl = now + ms
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil(ms) + 1) end
return '0'
