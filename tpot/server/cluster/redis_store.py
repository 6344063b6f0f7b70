"""The name store shared by the nodes of a cluster, in Redis (`--redis URL`).

Each name is a hash, `PREFIX n:NAME`: the hash of its reclaim token, its pool key if it is
pooled, and its state: held (`h`) or reserved (`r`, with the deadline of its reservation
and the node whose set of reservations holds it).  The tunnels holding a name are its
members (one, unless pooled): the set `PREFIX m:NAME` of their leases, each lease a hash
`PREFIX lease:LEASE` of its name, its node and, once attached, the route (kind, access
secret).  Every change is one Lua script, so that two nodes claiming one name cannot both
win.  Reservations expire by the clock of the node that asks (nodes keep NTP time;
deadlines are milliseconds since the epoch), compared whenever a script reads them, as
tpot.server.memory_store does.  `--max-tunnels` is per node: each node keeps the set of
its leases (`PREFIX node:NODE`) and of the names it reserved (`PREFIX rsv:NODE`, by
deadline).

Liveness: each node beats (`beat`, tpot.server.cluster.heartbeat) into `PREFIX nodes`, a
sorted set of node ids by the time their entry expires, and `PREFIX addr`, where each is
reached.  A member whose node's entry has expired routes nowhere (lookup leaves it out: a
name with no other member gets a 503), and leaves its name, counted from the expiry: at
once for a claim of that name, within a few beats for the rest (each beat handles a
bounded part of a few dead nodes); a name whose last member left that way is reserved.

Redis holds no reclaim token or pool secret in the clear, only their SHA-256 (a pool key,
tpot.server.requests.pool_key, is one); a TCP
tunnel's access secret is kept so that any node can check a /connect-tpot proof (it is the
tunnel's own random secret, never the server's key).
"""

import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.internet import defer
from zope.interface import implementer

from tpot.protocol import names
from tpot.server.store import (
    RESERVE_SECONDS,
    Claim,
    INameStore,
    LeaseLost,
    LocalRoute,
    NameTaken,
    RegistryFull,
    RegistryUnavailable,
    RemoteRoute,
    RouteInfo,
)

DEFAULT_PREFIX = "tpot:"
# A random name is drawn again while it is in use; past this many draws the store is full.
RANDOM_NAME_DRAWS = 50

# The helpers every script starts with.  `forget` drops a name wholly: its hash, its
# members, its reservation.  `reserve` keeps a name with no members for its reclaim token
# (or pool key) until `deadline`.  `leave` takes a member out of its name; the last one
# leaving an attached member with `keep` reserves the name, otherwise frees it.  `purge`
# makes the members of a name whose nodes are gone leave it, reserving it from their expiry.
_HELPERS = """
local function expiry(p, node)
  return tonumber(redis.call('ZSCORE', p .. 'nodes', node))
end
local function forget(p, n)
  local k = p .. 'n:' .. n
  for _, l in ipairs(redis.call('SMEMBERS', p .. 'm:' .. n)) do
    redis.call('SREM', p .. 'node:' .. (redis.call('HGET', p .. 'lease:' .. l, 'node') or ''), l)
    redis.call('DEL', p .. 'lease:' .. l)
  end
  local reserver = redis.call('HGET', k, 'rn')
  if reserver then redis.call('ZREM', p .. 'rsv:' .. reserver, n) end
  redis.call('DEL', k, p .. 'm:' .. n)
end
local function reserve(p, n, node, deadline)
  redis.call('HSET', p .. 'n:' .. n, 'st', 'r', 'dl', deadline, 'rn', node)
  redis.call('ZADD', p .. 'rsv:' .. node, deadline, n)
end
local function leave(p, l, keep, deadline)
  local n, node, kind = unpack(redis.call('HMGET', p .. 'lease:' .. l, 'name', 'node', 'kind'))
  if not n then return end
  redis.call('DEL', p .. 'lease:' .. l)
  redis.call('SREM', p .. 'node:' .. node, l)
  redis.call('SREM', p .. 'm:' .. n, l)
  if redis.call('SCARD', p .. 'm:' .. n) > 0 then return end
  if keep and kind then reserve(p, n, node, deadline) else forget(p, n) end
end
local function purge(p, n, now, reservation)
  for _, l in ipairs(redis.call('SMEMBERS', p .. 'm:' .. n)) do
    local owner = redis.call('HGET', p .. 'lease:' .. l, 'node')
    if not owner then
      -- A member whose lease is gone (evicted, or deleted by hand) holds nothing.
      redis.call('SREM', p .. 'm:' .. n, l)
      if redis.call('SCARD', p .. 'm:' .. n) == 0 and redis.call('HGET', p .. 'n:' .. n, 'st') == 'h' then forget(p, n) end
    else
      local died = expiry(p, owner) or now
      if died <= now then leave(p, l, true, died + reservation) end
    end
  end
end
local function add_member(p, n, node, l)
  redis.call('HSET', p .. 'lease:' .. l, 'name', n, 'node', node)
  redis.call('SADD', p .. 'm:' .. n, l)
  redis.call('SADD', p .. 'node:' .. node, l)
end
local function unreserve(p, n)
  local k = p .. 'n:' .. n
  local reserver = redis.call('HGET', k, 'rn')
  if reserver then redis.call('ZREM', p .. 'rsv:' .. reserver, n) end
  redis.call('HDEL', k, 'dl', 'rn')
  redis.call('HSET', k, 'st', 'h')
end
"""

# ARGV: prefix, node, name, presented token hash (or ''), pool key (or ''), new lease, new
# token hash, now (ms), max tunnels (-1: none), reservation (ms).  Returns 'ok', 'joined',
# 'reclaimed', 'taken', 'held:MS' (taken, reserved for MS more for a dropped tunnel) or 'full'.
CLAIM = _HELPERS + """
local p, node, name, presented, pool, lease, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local now, max, reservation = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
for _, n in ipairs(redis.call('ZRANGEBYSCORE', p .. 'rsv:' .. node, '-inf', now)) do forget(p, n) end
local k = p .. 'n:' .. name
purge(p, name, now, reservation)
local state, deadline, held_token, held_pool = unpack(redis.call('HMGET', k, 'st', 'dl', 'th', 'ph'))
if state == 'r' and tonumber(deadline) <= now then
  forget(p, name)
  state = false
end
local same_pool = pool ~= '' and held_pool == pool
local reclaim = state == 'r' and (same_pool or (pool == '' and not held_pool and presented ~= '' and held_token == presented))
local join = state == 'h' and same_pool
if not reclaim then
  if max >= 0 and redis.call('SCARD', p .. 'node:' .. node) + redis.call('ZCARD', p .. 'rsv:' .. node) >= max then return 'full' end
  if state == 'r' then return 'held:' .. (tonumber(deadline) - now) end
  if state and not join then return 'taken' end
end
if reclaim then
  unreserve(p, name)
elseif not join then
  redis.call('HSET', k, 'st', 'h', 'th', token)
  if pool ~= '' then redis.call('HSET', k, 'ph', pool) end
end
add_member(p, name, node, lease)
if reclaim then return 'reclaimed' end
if join then return 'joined' end
return 'ok'
"""

# ARGV: prefix, lease, kind, access secret (or '').  Returns 1, or 0 for a lost lease.
ATTACH = """
local k = ARGV[1] .. 'lease:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, 'kind', ARGV[3], 'secret', ARGV[4])
return 1
"""

# ARGV: prefix, lease, reserve ('1' or '0'), now (ms), reservation (ms).
RELEASE = _HELPERS + """
leave(ARGV[1], ARGV[2], ARGV[3] == '1', tonumber(ARGV[4]) + tonumber(ARGV[5]))
return 1
"""

# ARGV: prefix, name, now (ms).  For each attached member whose node is alive: node, lease,
# kind, access secret, the node's signed address.
LOOKUP = _HELPERS + """
local p, name, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local routes = {}
for _, l in ipairs(redis.call('SMEMBERS', p .. 'm:' .. name)) do
  local node, kind, secret = unpack(redis.call('HMGET', p .. 'lease:' .. l, 'node', 'kind', 'secret'))
  if kind and (expiry(p, node) or 0) > now then
    for _, v in ipairs({node, l, kind, secret or '', redis.call('HGET', p .. 'addr', node) or ''}) do
      table.insert(routes, v)
    end
  end
end
return routes
"""

# ARGV: prefix, node, signed address, now (ms), time to live (ms), reservation (ms).
# Says this node is alive until now + ttl and where it is reached; handles the members of a
# few dead nodes (a bounded amount per beat); returns {was this node alive until now (1/0),
# nodes alive, tunnels on them}.
BEAT = _HELPERS + """
local p, node, address = ARGV[1], ARGV[2], ARGV[3]
local now, ttl, reservation = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local was_alive = (expiry(p, node) or 0) > now
redis.call('ZADD', p .. 'nodes', now + ttl, node)
redis.call('HSET', p .. 'addr', node, address)
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', p .. 'nodes', '-inf', now, 'LIMIT', 0, 4)) do
  local died = expiry(p, dead)
  for _, l in ipairs(redis.call('SRANDMEMBER', p .. 'node:' .. dead, 200)) do leave(p, l, true, died + reservation) end
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', p .. 'rsv:' .. dead, '-inf', now, 'LIMIT', 0, 200)) do forget(p, n) end
  if redis.call('SCARD', p .. 'node:' .. dead) + redis.call('ZCARD', p .. 'rsv:' .. dead) == 0 then
    redis.call('ZREM', p .. 'nodes', dead)
    redis.call('HDEL', p .. 'addr', dead)
  end
end
local alive = redis.call('ZRANGEBYSCORE', p .. 'nodes', '(' .. now, '+inf')
local tunnels = 0
for _, n in ipairs(alive) do tunnels = tunnels + redis.call('SCARD', p .. 'node:' .. n) end
return {was_alive and 1 or 0, #alive, tunnels}
"""

# ARGV: prefix, node, now (ms), reservation (ms), first ('1' for a process's first sync, or
# '0'), then for each tunnel open on this node: name, lease, token hash, pool key (or ''),
# kind, access secret.  Writes those tunnels back (after Redis lost them, or this node lost
# Redis) unless their names went to others meanwhile; this node's other attached members,
# which no tunnel here serves any more, leave their names, and on a first sync its claims
# too (an earlier process of this node id made them).  Returns the names that went to others.
SYNC = _HELPERS + """
local p, node, now, reservation, first = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local live, lost = {}, {}
for i = 6, #ARGV, 6 do
  local n, l, th, pool, kind, secret = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local k = p .. 'n:' .. n
  live[l] = true
  if redis.call('HGET', p .. 'lease:' .. l, 'node') ~= node then
    purge(p, n, now, reservation)
    local state, held_token, held_pool = unpack(redis.call('HMGET', k, 'st', 'th', 'ph'))
    if pool ~= '' and state and held_pool == pool then
      if state == 'r' then unreserve(p, n) end
    elseif not state or (pool == '' and not held_pool and held_token == th) then
      if state then forget(p, n) end
      redis.call('HSET', k, 'st', 'h', 'th', th)
      if pool ~= '' then redis.call('HSET', k, 'ph', pool) end
    else
      table.insert(lost, n)
      live[l] = false
    end
    if live[l] then add_member(p, n, node, l) end
  end
  if live[l] then redis.call('HSET', p .. 'lease:' .. l, 'kind', kind, 'secret', secret) end
end
for _, l in ipairs(redis.call('SMEMBERS', p .. 'node:' .. node)) do
  if not live[l] and (first or redis.call('HGET', p .. 'lease:' .. l, 'kind')) then leave(p, l, true, now + reservation) end
end
return lost
"""


def token_hash(token):
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def parse_redis_url(url):
    """`redis://[[user]:password@]host[:port][/db]` (or `rediss://`, TLS) to the keyword
    arguments of txredisapi.Connection; ValueError with one sentence if it is not one."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"{url!r} is not a Redis URL: use redis://[:password@]host:port/db (or rediss:// for TLS).")
    db = parts.path.strip("/") or "0"
    try:
        port = parts.port or 6379
        dbid = int(db)
    except ValueError:
        raise ValueError(f"{url!r} is not a Redis URL: the port and the database must be numbers.") from None
    return {
        "host": parts.hostname,
        "port": port,
        "dbid": dbid,
        "password": unquote(parts.password) if parts.password else None,
        "username": unquote(parts.username) if parts.username else None,
        "ssl_context_factory": parts.scheme == "rediss",
    }


def redacted_url(url):
    """`url` without its password, for logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def connect_redis(url, connect_timeout=5, reply_timeout=5, reconnect=True):
    """A Deferred txredisapi connection to `url` (parse_redis_url), which reconnects.

    Without `reconnect` it fails if Redis cannot be reached (one that reconnects only
    keeps trying).  Replies stay strings: txredisapi would otherwise turn a lease or a node
    id that looks like a number into one."""
    return txredisapi.Connection(**parse_redis_url(url), reconnect=reconnect, convertNumbers=False,
                                 connectTimeout=connect_timeout, replyTimeout=reply_timeout)


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learnt: whether this node's entry had survived (it has not after a
    Redis restart, or a gap longer than its time to live), and the cluster's size."""

    was_alive: bool
    nodes: int
    tunnels: int


@implementer(INameStore)
class RedisNameStore:
    """INameStore over `redis`, a txredisapi connection (None until there is one); `node`
    is this node's id.  Beyond the interface, a node beats (`beat`) to say it is alive,
    and writes its open tunnels back (`sync`) whenever its entry did not survive."""

    def __init__(self, redis, node, max_tunnels=None, clock=None, reserve_seconds=RESERVE_SECONDS,
                 prefix=DEFAULT_PREFIX):
        self.redis = redis
        self.node = node
        self.max_tunnels = max_tunnels
        self.reserve_seconds = reserve_seconds
        self.prefix = prefix
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock

    @defer.inlineCallbacks
    def claim(self, name=None, token=None, pool=None):
        for _ in range(1 if name is not None else RANDOM_NAME_DRAWS):
            wanted = name if name is not None else names.random_name()
            new_token = secrets.token_urlsafe(24)
            lease = secrets.token_urlsafe(16)
            presented = token_hash(token) if token else ""
            answer = yield self._run(CLAIM, self.node, wanted, presented, pool or "", lease,
                                     token_hash(new_token), self._now_ms(),
                                     -1 if self.max_tunnels is None else self.max_tunnels, self._reservation_ms())
            if answer == "full":
                raise RegistryFull("this node has reached its tunnel limit")
            if answer.startswith("held:") and name is not None:
                raise NameTaken(wanted, int(answer[len("held:"):]) / 1000)
            if answer in ("ok", "joined", "reclaimed"):
                # Only a hash of the token is kept: a member joining a pool gets one of its
                # own, which its pool key makes unnecessary for taking the name back.
                kept = token if answer == "reclaimed" and not pool else new_token
                return Claim(wanted, lease, kept, pool)
        if name is not None:
            raise NameTaken(name)
        raise RegistryFull("no random name is free")

    @defer.inlineCallbacks
    def attach(self, lease, route_info):
        attached = yield self._run(ATTACH, lease, route_info.kind, route_info.access_secret or "")
        if not attached:
            raise LeaseLost(lease)

    @defer.inlineCallbacks
    def release(self, lease, reserve=False):
        yield self._run(RELEASE, lease, "1" if reserve else "0", self._now_ms(), self._reservation_ms())

    @defer.inlineCallbacks
    def lookup(self, name):
        found = yield self._run(LOOKUP, name, self._now_ms())
        return tuple(self._route(name, *found[i:i + 5]) for i in range(0, len(found or ()), 5))

    def _route(self, name, node, lease, kind, secret, address):
        info = RouteInfo(kind, access_secret=secret or None)
        return LocalRoute(name, lease, info) if node == self.node else RemoteRoute(name, node, info, address, lease)

    @defer.inlineCallbacks
    def beat(self, signed_address, ttl):
        """Say this node is alive for `ttl` seconds, reached at `signed_address`; a Beat."""
        was_alive, nodes, tunnels = yield self._run(
            BEAT, self.node, signed_address, self._now_ms(), round(ttl * 1000), self._reservation_ms())
        return Beat(int(was_alive) == 1, int(nodes), int(tunnels))

    @defer.inlineCallbacks
    def sync(self, tunnels, first=False):
        """Write back the tunnels open here, as (Claim, RouteInfo) pairs; the names of
        those whose names went to others meanwhile.  `first`: this process's first sync,
        which also drops the claims an earlier process of this node id left."""
        fields = []
        for claim, info in tunnels:
            fields += [claim.name, claim.lease, token_hash(claim.token), claim.pool or "",
                       info.kind, info.access_secret or ""]
        lost = yield self._run(SYNC, self.node, self._now_ms(), self._reservation_ms(), "1" if first else "0",
                               *fields)
        return list(lost or ())

    def available(self):
        """Whether a connection to Redis is up now.  txredisapi queues commands while it
        reconnects; a caller would wait for as long as Redis is away."""
        # The handler's factory is the only place txredisapi says how many connections are up.
        factory = getattr(self.redis, "_factory", None)
        return self.redis is not None and (factory is None or factory.size > 0)

    def _run(self, script, *args):
        if not self.available():
            return defer.fail(RegistryUnavailable("Redis is not reachable"))
        d = self.redis.eval(script, keys=[], args=[self.prefix, *map(str, args)])
        return d.addErrback(_unavailable)

    def _now_ms(self):
        return round(self.clock.seconds() * 1000)

    def _reservation_ms(self):
        return round(self.reserve_seconds * 1000)


def _unavailable(failure):
    failure.trap(txredisapi.ConnectionError)
    raise RegistryUnavailable(str(failure.value))
