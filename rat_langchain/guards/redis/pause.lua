-- Hold a key: KEYS[1] is its pause key, ARGV[1] the pause in ms (never shortens a longer one).
-- What the key holds is anyone's (Redis is shared): a value that is not a number, or a key of
-- another type, is read as no pause (take.lua cuts back one longer than its reader allows).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ms = tonumber(ARGV[1])
local untl = now + ms
local held = redis.pcall('GET', KEYS[1])
if type(held) ~= 'string' then held = '0' end
local cur = tonumber(held) or 0
if cur ~= cur then cur = 0 end
if untl > cur then redis.call('SET', KEYS[1], tostring(untl), 'PX', math.ceil(ms) + 1) end
return '0'
