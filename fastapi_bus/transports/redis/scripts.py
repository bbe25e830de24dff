"""The Lua scripts that make each multi-key change atomic, and the keys they work on.

Every key of one bus starts with ``{prefix}``: the braces are a Redis Cluster hash tag, so all of
them live in one slot and each script stays legal on a cluster.
"""

from __future__ import annotations

import dataclasses

__all__ = [
    "ACK",
    "DECLARE",
    "DELAY",
    "GROUP",
    "MOVE",
    "MOVE_DUE",
    "PRUNE",
    "READ",
    "ROUTE",
    "SEND",
    "Keys",
]

#: The consumer group of every queue's stream: a queue is one group, its consumers compete.
GROUP = "bus"


@dataclasses.dataclass(frozen=True)
class Keys:
    """The names of a bus's keys under ``prefix``."""

    prefix: str

    @property
    def tag(self) -> str:
        return "{" + self.prefix + "}"

    def stream(self, queue: str) -> str:
        """The stream that holds ``queue``'s messages."""
        return f"{self.tag}:q:{queue}"

    @property
    def queues(self) -> str:
        """Set of every queue (and dead-letter queue) declared."""
        return f"{self.tag}:queues"

    @property
    def bindings(self) -> str:
        """Hash: queue -> the event patterns bound to it, separated by spaces."""
        return f"{self.tag}:bindings"

    @property
    def version(self) -> str:
        """Counter raised whenever a binding changes: publishers' routing caches check it."""
        return f"{self.tag}:bindings-version"

    @property
    def delayed(self) -> str:
        """Sorted set of delayed messages' tokens, scored by when they are due (ms). Each
        token's message and target queue are in the hash ``<this key>:<token>``."""
        return f"{self.tag}:delayed"

    def channel(self, name: str) -> str:
        """The Pub/Sub channel of broadcasts of event ``name``."""
        return f"{self.tag}:bc:{name}"


# KEYS: queues set, bindings hash, version, stream. ARGV: queue, dead-letter queue, group,
# patterns...
# Adds the queue, merges its patterns (raising the version if any is new) and creates the
# stream's group; messages already in the stream are delivered.
DECLARE = """
redis.call('SADD', KEYS[1], ARGV[1], ARGV[2])
local known = {}
local current = redis.call('HGET', KEYS[2], ARGV[1])
local patterns = {}
if current then
  for word in string.gmatch(current, '%S+') do
    known[word] = true
    patterns[#patterns + 1] = word
  end
end
local changed = false
for i = 4, #ARGV do
  if not known[ARGV[i]] then
    known[ARGV[i]] = true
    patterns[#patterns + 1] = ARGV[i]
    changed = true
  end
end
if changed then
  redis.call('HSET', KEYS[2], ARGV[1], table.concat(patterns, ' '))
  redis.call('INCR', KEYS[3])
end
redis.pcall('XGROUP', 'CREATE', KEYS[4], ARGV[3], '0', 'MKSTREAM')
return changed and 1 or 0
"""

# KEYS: version, then the streams of the queues the publisher routed to. ARGV: the version the
# publisher routed with, the message value, the channel for broadcasts.
# Returns -1 if the bindings changed meanwhile (route again), else streams + broadcast receivers.
ROUTE = """
local version = redis.call('GET', KEYS[1]) or '0'
if version ~= ARGV[1] then
  return -1
end
for i = 2, #KEYS do
  redis.call('XADD', KEYS[i], '*', 'm', ARGV[2])
end
return #KEYS - 1 + redis.call('PUBLISH', ARGV[3], ARGV[2])
"""

# KEYS: queues set, stream. ARGV: queue, value. Returns 0 if the queue does not exist.
SEND = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
return 1
"""

# KEYS: queues set, delayed set, version. ARGV: delay (ms), token prefix, value, version the
# publisher routed with ('' for none), target queues...
# Keeps one delayed copy per queue that exists, due by the server's clock; returns how many, or
# -1 if the bindings changed.
DELAY = """
if ARGV[4] ~= '' and (redis.call('GET', KEYS[3]) or '0') ~= ARGV[4] then
  return -1
end
local time = redis.call('TIME')
local due = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[1])
local stored = 0
for i = 5, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    local token = ARGV[2] .. ':' .. i
    redis.call('HSET', KEYS[2] .. ':' .. token, 'q', ARGV[i], 'm', ARGV[3])
    redis.call('ZADD', KEYS[2], due, token)
    stored = stored + 1
  end
end
return stored
"""

# KEYS: delayed set, queues set. ARGV: at most this many, stream key prefix.
# Moves the messages that are due by the server's clock into their queues' streams.
# Returns {moved, ms until the next one is due or -1}.
MOVE_DUE = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, token in ipairs(due) do
  local key = KEYS[1] .. ':' .. token
  local entry = redis.call('HMGET', key, 'q', 'm')
  if entry[1] and entry[2] and redis.call('SISMEMBER', KEYS[2], entry[1]) == 1 then
    redis.call('XADD', ARGV[2] .. entry[1], '*', 'm', entry[2])
  end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], token)
end
local next_due = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if next_due[2] then
  return {#due, math.max(tonumber(next_due[2]) - now, 0)}
end
return {#due, -1}
"""

# KEYS: stream. ARGV: group, entry ids... Acknowledges the entries and deletes them, so a stream
# holds only messages that are waiting or being handled.
ACK = """
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
return redis.call('XDEL', KEYS[1], unpack(ids))
"""

# KEYS: stream, target stream. ARGV: group, entry id, new value. Puts the message at the end of
# the target stream (its own to requeue it, a dead-letter stream to give up on it) in place of
# the entry, in one step: never lost, never doubled.
MOVE = """
redis.call('XADD', KEYS[2], '*', 'm', ARGV[3])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
"""

# KEYS: stream. ARGV: group, consumer, count, start id ('>' for new entries, '0' for our own
# pending ones). XREADGROUP without blocking, the batch packed into two strings, which are far
# cheaper for redis-py's pure Python parser than an array of entries: an index of ASCII words
# separated by spaces, then the bytes of the values one after the other. Per entry, the index
# holds its id, then the length of its value if its only field is ``m`` (the usual case), ``x``
# if it was deleted, or ``f<n>`` and the lengths of its n fields and values.
READ = """
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
  'STREAMS', KEYS[1], ARGV[4])
if not reply then
  return false
end
local index = {}
local data = {}
local n = 0
local d = 0
for _, entry in ipairs(reply[1][2]) do
  local fields = entry[2]
  index[n + 1] = entry[1]
  if not fields then
    index[n + 2] = 'x'
    n = n + 2
  elseif #fields == 2 and fields[1] == 'm' then
    index[n + 2] = #fields[2]
    n = n + 2
    d = d + 1
    data[d] = fields[2]
  else
    index[n + 2] = 'f' .. (#fields / 2)
    n = n + 2
    for _, part in ipairs(fields) do
      n = n + 1
      index[n] = #part
      d = d + 1
      data[d] = part
    end
  end
end
return {table.concat(index, ' '), table.concat(data)}
"""

# KEYS: stream. ARGV: group, the calling consumer, idle ms. Removes the group's other consumers
# that hold nothing and have been idle longer than that (consumers of processes that died): one
# that holds entries stays until they are claimed, and a live consumer that is removed is
# added back by its next read. Returns how many were removed.
PRUNE = """
local removed = 0
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
  if info['name'] ~= ARGV[2] and tonumber(info['pending']) == 0
      and tonumber(info['idle']) > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
"""
