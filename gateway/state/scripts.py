"""The Lua scripts the Redis backend runs: each read-modify-write in one step.

Redis runs a script atomically, so two replicas admitting the same client at
the same moment cannot both take the last token. Time is Redis' own (`TIME`),
so replicas whose clocks differ still share one bucket. Scripts are sent once
and then called by their SHA1 (EVALSHA); see `redis.commands.core.Script`.
"""

from __future__ import annotations

# KEYS[1] the client's bucket (hash: tokens, at), KEYS[2] its requests in flight
# (sorted set: ticket -> lease end, ms), KEYS[3] the request source's failed
# authentications. ARGV: rate (tokens per ms), burst, max_concurrent (0: none),
# ticket, lease (ms), max failures (0: no check).
# Returns {0, 0} admitted, {1, 0} too many in flight, {2, ms} over the rate,
# {3, ms} the source is slowed down after failed authentications (ms left).
ADMIT = """
local maxf = tonumber(ARGV[6])
if maxf > 0 then
  local failures = tonumber(redis.call('GET', KEYS[3]) or '0')
  if failures >= maxf then return {3, redis.call('PTTL', KEYS[3])} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local maxc = tonumber(ARGV[3])
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= maxc then return {1, 0} end
end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local ttl = math.ceil(burst / rate) + 1000
local verdict = {0, 0}
if tokens < 1 then
  verdict = {2, math.ceil((1 - tokens) / rate)}
else
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], ttl)
if verdict[1] == 0 and maxc > 0 then
  local lease = tonumber(ARGV[5])
  redis.call('ZADD', KEYS[2], now + lease, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], lease)
end
return verdict
"""

# KEYS[1] a source's failure count. ARGV[1] window (ms). Returns {count, ms left}.
FAIL = """
local n = redis.call('INCR', KEYS[1])
local left = redis.call('PTTL', KEYS[1])
if n == 1 or left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {n, left}
"""

# KEYS[1] a source's failure count. Returns {count, ms left} ({0, 0}: none).
FAILURES = """
local n = redis.call('GET', KEYS[1])
if not n then return {0, 0} end
return {tonumber(n), redis.call('PTTL', KEYS[1])}
"""

# KEYS[1] a lock. ARGV[1] the holder's token. Deletes the lock only if still held.
UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] what Azure DevOps last said about a credential (hash). ARGV: limit,
# remaining, updated, delay, delay_updated, blocked_until (wall-clock seconds;
# '' when not reported), keep (ms). Each figure is kept only if newer than the
# stored one; blocked_until only grows.
UPSTREAM = """
local cur = redis.call('HMGET', KEYS[1], 'updated', 'delay_updated', 'blocked_until')
if ARGV[3] ~= '' and (not cur[1] or tonumber(ARGV[3]) > tonumber(cur[1])) then
  redis.call('HSET', KEYS[1], 'limit', ARGV[1], 'remaining', ARGV[2], 'updated', ARGV[3])
end
if ARGV[5] ~= '' and (not cur[2] or tonumber(ARGV[5]) > tonumber(cur[2])) then
  redis.call('HSET', KEYS[1], 'delay', ARGV[4], 'delay_updated', ARGV[5])
end
if ARGV[6] ~= '' and (not cur[3] or tonumber(ARGV[6]) > tonumber(cur[3])) then
  redis.call('HSET', KEYS[1], 'blocked_until', ARGV[6])
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
"""
