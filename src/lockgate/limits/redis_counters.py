"""Counters in Redis, shared by every replica: the same contract as ``MemoryCounters``, decided by Lua.

Each operation is one Lua script run atomically by the Redis server, so admission across replicas is
all-or-nothing and never overshoots: ``admit`` reads every counter, then reserves on all of them or on
none; ``settle`` corrects the reservations to what the call used; ``set_spend`` raises a budget's
settled spend. Every time comes from the server (``redis.call('TIME')``), never from a replica's clock,
so replicas whose clocks disagree still share one window and one expiry.

Keys, all under ``<prefix>limits:`` (the ``redis.prefix`` setting), one family per kind of counter:

- ``w:<key>``: a sliding window, HASH ``second -> amount``. Buckets that left the window are deleted by
  the script that next reads it; the key expires ``window + 2`` seconds after its last reservation.
- ``c:<key>``: concurrency slots, ZSET ``reservation -> expiry`` (microseconds, server time); expired
  members are removed before counting; the key expires a second after its longest hold.
- ``b:<key>``: a budget period, HASH ``spent`` (settled), ``pending`` (the sum of the pending
  reservations) and ``r:<reservation> -> amount``; with ``p:<key>``, ZSET ``reservation -> expiry`` of the
  pending ones. Expired reservations leave ``pending`` before the budget is read. Both expire a day after
  the period ends (``ends_at``).

Arithmetic: Lua numbers are doubles, exact for integers up to 2^53 (about 9.0e15). Budgets count whole
nano-dollars (up to about 9 million dollars a period) and windows count requests and tokens, so every
sum is exact; values are stored and returned as ``%.17g`` strings, which round-trip a double exactly.
Times are microseconds since the epoch (about 1.8e15 today), also exact.

Redis Cluster: the client here talks to one server (or a primary behind a proxy), but every key an
operation touches is declared in ``KEYS``, so the layout is ready for a cluster client, where the keys of
one admission must hash to one slot: a counter key holding a ``{tag}`` (the tenant id, say) supplies the
hash tag (a prefix holding one would put every key in a single slot instead).

Failure: any Redis error, or an operation taking longer than ``redis.timeout`` (connecting included),
raises ``CountersUnavailable``; the caller decides whether to fail closed or open. A failed command is
not retried (a script that ran but whose answer was lost must not reserve twice); the connection pool
drops a broken connection and opens a fresh one for the next operation. An admission whose answer was
lost may still have reserved: its slot and budget reservation lapse after ``hold``, its window amounts
with the window.

Lost data: a restarted (or flushed) Redis forgets every budget's spend. The key ``reconciled`` marks that
budgets were raised to the store's spend since the data was last lost; an admission that checks a budget
while it is missing raises ``CountersReset``, so no call is admitted against a budget that forgot its spend.

Needs Redis 5 or later (scripts that write after reading ``TIME``).

``redis`` is imported when a ``RedisCounters`` is built, not when this module is imported.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lockgate.limits.counters import Admission, Check, CountersReset, CountersUnavailable, OverSoftCap

if TYPE_CHECKING:
    from lockgate.config.schema import RedisConfig

MARKER_TTL = 3600
"""Seconds the ``reconciled`` marker lives without renewal (``limits.reconcile_interval`` renews it)."""
MAX_CONNECTIONS = 64
"""Connections per ``RedisCounters`` (one process); more concurrent operations wait for a free one."""

_PREAMBLE = """
local function fmt(x) return string.format('%.17g', x) end
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now_us = sec * 1000000 + tonumber(t[2])
local now = now_us / 1000000
local function budget_expiry(ends_at, hold_s)
  return math.max(math.ceil(ends_at) + 86400, sec + math.ceil(hold_s) + 60)
end
"""

# ARGV: reservation, hold (microseconds), hold (seconds), n, whether any check is a budget ('1' | '0'),
# then per check: kind (w|c|b), limit, amount, window (whole seconds), ends_at. KEYS: one per check, two
# for a budget (the HASH, then the ZSET), then the marker that budgets were reconciled with the store.
# Returns {-1} when a budget is checked and the marker is gone (the server lost its data): the caller
# reconciles every budget with the store, sets the marker, and asks again.
_ADMIT = (
    _PREAMBLE
    + """
local res, hold_us, hold_s, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[#KEYS]) == 0 then
  return {-1}
end
local checks = {}
local k, a = 1, 6
for i = 1, n do
  local c = {kind = ARGV[a], limit = tonumber(ARGV[a + 1]), amount = tonumber(ARGV[a + 2]),
             width = tonumber(ARGV[a + 3]), ends_at = tonumber(ARGV[a + 4]), key = KEYS[k]}
  a, k = a + 5, k + 1
  if c.kind == 'w' then
    local flat = redis.call('HGETALL', c.key)
    local oldest = sec - c.width
    local usage, buckets = 0, {}
    for j = 1, #flat, 2 do
      local s = tonumber(flat[j])
      if s <= oldest then
        redis.call('HDEL', c.key, flat[j])
      else
        local v = tonumber(flat[j + 1])
        buckets[#buckets + 1] = {s, v}
        usage = usage + v
      end
    end
    c.usage, c.buckets = usage, buckets
  elseif c.kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', c.key, '-inf', fmt(now_us))
    c.usage = redis.call('ZCARD', c.key)
  else
    c.pending_key = KEYS[k]
    k = k + 1
    local expired = redis.call('ZRANGEBYSCORE', c.pending_key, '-inf', fmt(now_us))
    local pending = tonumber(redis.call('HGET', c.key, 'pending') or '0')
    if #expired > 0 then
      for _, r in ipairs(expired) do
        local amount = redis.call('HGET', c.key, 'r:' .. r)
        if amount then
          pending = pending - tonumber(amount)
          redis.call('HDEL', c.key, 'r:' .. r)
        end
      end
      redis.call('ZREMRANGEBYSCORE', c.pending_key, '-inf', fmt(now_us))
      if redis.call('ZCARD', c.pending_key) == 0 then pending = 0 end
      redis.call('HSET', c.key, 'pending', fmt(pending))
    end
    c.usage = tonumber(redis.call('HGET', c.key, 'spent') or '0') + pending
  end
  checks[i] = c
end

local refused = -1
for i = 1, n do
  if checks[i].usage + checks[i].amount > checks[i].limit then
    refused = i
    break
  end
end

local retry_after = 0
if refused > 0 then
  local c = checks[refused]
  if c.kind == 'w' then
    retry_after = c.width
    if c.amount <= c.limit then
      table.sort(c.buckets, function(x, y) return x[1] < y[1] end)
      local usage = c.usage
      for _, b in ipairs(c.buckets) do
        usage = usage - b[2]
        if usage + c.amount <= c.limit then
          retry_after = math.max(0, b[1] + c.width - now)
          break
        end
      end
    end
  elseif c.kind == 'c' then
    local first = redis.call('ZRANGE', c.key, 0, 0, 'WITHSCORES')
    retry_after = 1
    if #first > 0 then retry_after = math.max(0, (tonumber(first[2]) - now_us) / 1000000) end
  else
    retry_after = math.max(0, c.ends_at - now)
  end
else
  for i = 1, n do
    local c = checks[i]
    if c.kind == 'w' then
      local v = tonumber(redis.call('HGET', c.key, t[1]) or '0') + c.amount
      redis.call('HSET', c.key, t[1], fmt(v))
      redis.call('PEXPIRE', c.key, (c.width + 2) * 1000)
      c.buckets[#c.buckets + 1] = {sec, v}
    elseif c.kind == 'c' then
      redis.call('ZADD', c.key, fmt(now_us + hold_us), res)
      local want = math.ceil(hold_us / 1000) + 1000
      if redis.call('PTTL', c.key) < want then redis.call('PEXPIRE', c.key, want) end
    else
      local pending = tonumber(redis.call('HGET', c.key, 'pending') or '0') + c.amount
      redis.call('HSET', c.key, 'r:' .. res, fmt(c.amount), 'pending', fmt(pending))
      redis.call('ZADD', c.pending_key, fmt(now_us + hold_us), res)
      local at = budget_expiry(c.ends_at, hold_s)
      redis.call('EXPIREAT', c.key, at)
      redis.call('EXPIREAT', c.pending_key, at)
    end
  end
end

local out = {refused > 0 and 0 or 1, refused - 1, t[1], t[2], fmt(retry_after)}
for i = 1, n do
  local c = checks[i]
  local left = c.limit - c.usage
  if refused < 0 then left = left - c.amount end
  out[#out + 1] = fmt(math.max(0, left))
end
for i = 1, n do
  local c = checks[i]
  local reset = 0
  if c.kind == 'w' then
    local newest = nil
    for _, b in ipairs(c.buckets) do
      if newest == nil or b[1] > newest then newest = b[1] end
    end
    if newest ~= nil then reset = math.max(0, newest + c.width - now) end
  elseif c.kind == 'b' then
    reset = math.max(0, c.ends_at - now)
  end
  out[#out + 1] = fmt(reset)
end
return out
"""
)

# ARGV: reservation, the admission's second, n, then per check: kind, reserved, used, soft ('' for
# none), ends_at. KEYS as for admit. Returns index, spent pairs of the budgets at or over their soft cap.
_SETTLE = (
    _PREAMBLE
    + """
local res, second, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local over = {}
local k, a = 1, 4
for i = 1, n do
  local kind, reserved, used = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local soft, ends_at = ARGV[a + 3], tonumber(ARGV[a + 4])
  local key = KEYS[k]
  a, k = a + 5, k + 1
  if kind == 'w' then
    local v = redis.call('HGET', key, second)
    if v then redis.call('HSET', key, second, fmt(math.max(0, tonumber(v) + used - reserved))) end
  elseif kind == 'c' then
    redis.call('ZREM', key, res)
  else
    local pending_key = KEYS[k]
    k = k + 1
    local amount = redis.call('HGET', key, 'r:' .. res)
    if amount then
      redis.call('HDEL', key, 'r:' .. res)
      redis.call('ZREM', pending_key, res)
      local pending = tonumber(redis.call('HGET', key, 'pending') or '0') - tonumber(amount)
      if redis.call('ZCARD', pending_key) == 0 then pending = 0 end
      redis.call('HSET', key, 'pending', fmt(pending))
    end
    local spent = tonumber(redis.call('HGET', key, 'spent') or '0') + used
    redis.call('HSET', key, 'spent', fmt(spent))
    local at = budget_expiry(ends_at, 0)
    redis.call('EXPIREAT', key, at)
    redis.call('EXPIREAT', pending_key, at)
    if soft ~= '' and spent >= tonumber(soft) then
      over[#over + 1] = i - 1
      over[#over + 1] = fmt(spent)
    end
  end
end
return over
"""
)

# KEYS: the budget's HASH. ARGV: spent, ends_at.
_SET_SPEND = (
    _PREAMBLE
    + """
local spent = tonumber(ARGV[1])
if spent > tonumber(redis.call('HGET', KEYS[1], 'spent') or '0') then
  redis.call('HSET', KEYS[1], 'spent', fmt(spent))
end
redis.call('EXPIREAT', KEYS[1], budget_expiry(tonumber(ARGV[2]), 0))
return 1
"""
)

_KIND = {"window": "w", "concurrency": "c", "budget": "b"}


def _number(value: float) -> str:
    """A number as Lua's ``tonumber`` reads it back exactly (integers without a decimal point)."""
    if math.isnan(value):
        raise ValueError("a counter amount or limit is not a number")
    if math.isinf(value):
        return "1e308" if value > 0 else "-1e308"
    if float(value).is_integer() and abs(value) < 2**63:
        return str(int(value))
    return repr(float(value))


class RedisCounters:
    """The ``Counters`` contract in Redis (see the module's docstring for the data layout)."""

    def __init__(self, config: RedisConfig, client_name: str | None = None) -> None:
        """``config``: the ``redis`` section (``url``, ``prefix``, ``timeout``); ``client_name`` names its
        connections in Redis's ``CLIENT LIST``."""
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError
        from redis.maint_notifications import MaintNotificationsConfig

        if config.url is None:
            raise ValueError("redis.url is not set")
        # RuntimeError: under uvloop, a write on a connection the server (or the network) just closed
        # raises it instead of a ConnectionError.
        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError, RuntimeError)
        self._timeout = timeout = config.timeout
        self._space = f"{config.prefix}limits:"
        self._marker = f"{self._space}reconciled"
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            config.url.get_secret_value(),
            max_connections=MAX_CONNECTIONS,
            timeout=timeout,
            # No socket_timeout: each operation is bounded once, by ``_run``'s asyncio.timeout, instead of
            # twice (redis-py's own wraps every send in asyncio.wait_for). A cancelled read disconnects
            # its connection, so no late reply is left for the next command.
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=client_name,
            # Off: with them on, the pool skips its check for connections the server closed while idle
            # and hands them out; the next operation would fail instead of reconnecting.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._client: Any = redis.asyncio.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self._pool = pool
        self._admit = self._client.register_script(_ADMIT)
        self._settle = self._client.register_script(_SETTLE)
        self._set_spend = self._client.register_script(_SET_SPEND)

    def _keys(self, checks: Sequence[Check]) -> list[str]:
        keys: list[str] = []
        for check in checks:
            kind = _KIND[check.kind]
            keys.append(f"{self._space}{kind}:{check.key}")
            if kind == "b":
                keys.append(f"{self._space}p:{check.key}")
        return keys

    async def _run(self, script: Any, keys: list[str], args: list[str]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await script(keys=keys, args=args)
        except self._errors as exc:
            raise CountersUnavailable(f"Redis did not answer: {type(exc).__name__}: {exc}") from exc

    async def admit(self, checks: Sequence[Check], reservation: str, hold: float) -> Admission:
        checks = tuple(checks)
        budgets = any(check.kind == "budget" for check in checks)
        args = [
            reservation,
            str(math.floor(hold * 1_000_000)),
            _number(hold),
            str(len(checks)),
            "1" if budgets else "0",
        ]
        for check in checks:
            args += [
                _KIND[check.kind],
                _number(check.limit),
                _number(check.amount),
                str(int(check.window)),
                _number(check.ends_at),
            ]
        reply = await self._run(self._admit, [*self._keys(checks), self._marker], args)
        if int(reply[0]) == -1:
            raise CountersReset("Redis holds no budget spend: reconcile with the store first")
        n = len(checks)
        admitted, refused = int(reply[0]) == 1, int(reply[1])
        return Admission(
            reservation,
            admitted,
            checks,
            int(reply[2]) + int(reply[3]) / 1_000_000,
            refused=None if admitted else refused,
            retry_after=float(reply[4]),
            remaining=tuple(float(v) for v in reply[5 : 5 + n]),
            reset=tuple(float(v) for v in reply[5 + n : 5 + 2 * n]),
        )

    async def settle(self, admission: Admission, used: Sequence[float]) -> list[OverSoftCap]:
        if not admission.admitted:
            return []
        checks = admission.checks
        args = [admission.reservation, str(math.floor(admission.at)), str(len(checks))]
        for check, amount in zip(checks, used, strict=True):
            soft = "" if check.soft is None or check.kind != "budget" else _number(check.soft)
            args += [_KIND[check.kind], _number(check.amount), _number(amount), soft, _number(check.ends_at)]
        reply = await self._run(self._settle, self._keys(checks), args)
        return [OverSoftCap(checks[int(reply[i])], float(reply[i + 1])) for i in range(0, len(reply), 2)]

    async def set_spend(self, key: str, spent: float, ends_at: float) -> None:
        await self._run(self._set_spend, [f"{self._space}b:{key}"], [_number(spent), _number(ends_at)])

    async def reconciled(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                # It expires (the reconciler renews it every few seconds), so every key lockgate writes does.
                await self._client.set(self._marker, "1", ex=MARKER_TTL)
        except self._errors as exc:
            raise CountersUnavailable(f"Redis did not answer: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()
        await self._pool.aclose()
