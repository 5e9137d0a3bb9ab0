"""Delivering alert events: stored first, then Redis (the owner's WebSockets) and SNS.

    events -> alert_events (insert, skip known ids) -> for each still pending:
        Redis script: first time this id?  -> count it in the owner's minute
                      within ALERTS_MAX_PER_MINUTE -> PUBLISH {prefix}alerts {"type": "alert"}
                      beyond it                    -> held for the minute's summary
        SNS (ALERTS_SNS_TOPIC_ARN): each published alert, then each summary
    -> alert_events.delivered_at

No event twice: the Redis script records each id it has seen (``SET NX``) in the same atomic
step as publishing it, so a replay after a crash (Bytewax recovery re-running the last seconds,
or a pending event delivered again) publishes nothing twice. SNS follows a successful publish
and is marked per id only after SNS accepted it, so a crash in that instant sends it again with
the same ``event_id`` attribute (at least once; consumers can drop the repeat).

Rate limit: per owner and wall-clock minute, the first ALERTS_MAX_PER_MINUTE events go out as
they come; the excess is never dropped: once the minute is over one ``alert_summary`` message
lists them all (count, per rule, and every event).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
import redis
from redis.exceptions import NoScriptError

from core.alerts import AlertEvent
from core.aws import client as aws_client
from core.stores import alerts as store

log = logging.getLogger(__name__)
CHANNEL: Final = "alerts"
"""Pub/sub channel (under the Redis prefix) the API relays to each owner's WebSockets."""
RULES_CHANNEL: Final = "alert_rules"
"""Pub/sub channel announcing rule changes to the live flow."""
MEMORY_S: Final = 7 * 86_400
"""How long Redis remembers that an id was delivered (longer than any replay)."""

_SEND = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) == false then return 0 end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if n <= tonumber(ARGV[2]) then
  redis.call('PUBLISH', KEYS[4], ARGV[1])
  return 1
end
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
return 2
"""
"""KEYS: seen id, owner-minute count, owner-minute excess list, channel, pending summaries.
ARGV: message, limit, memory, minute end (ms), summary member. 0 seen, 1 sent, 2 held."""

_SUMMARISE = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 0 then return false end
local held = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
if #held == 0 then return false end
local events, rules = {}, {}
for i, raw in ipairs(held) do
  local doc = cjson.decode(raw)
  events[i] = doc['data']
  local rid = doc['data']['rule_id']
  rules[rid] = (rules[rid] or 0) + 1
end
local msg = cjson.encode({type = 'alert_summary', owner = ARGV[2], data = {
  minute = ARGV[3], suppressed = #held, by_rule = rules, events = events,
  message = #held .. ' more alerts in this minute, over the limit of ' .. ARGV[4]}})
redis.call('PUBLISH', KEYS[3], msg)
return msg
"""
"""KEYS: excess list, pending summaries, channel. ARGV: member, owner, minute ISO, limit."""


def alert_message(event: AlertEvent) -> dict[str, Any]:
    """What the channel carries for one event (the API forwards ``type`` and ``data``)."""
    return {"type": "alert", "owner": event.owner, "data": event.to_json()}


@dataclass
class Delivery:
    """Sends stored events to Redis and SNS under the per-owner rate limit."""

    redis: redis.Redis
    prefix: str
    max_per_minute: int = 30
    sns_topic_arn: str | None = None
    endpoint_url: str | None = None
    region: str = "us-east-1"
    _sns: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._send = self.redis.register_script(_SEND)
        self._summarise = self.redis.register_script(_SUMMARISE)

    def _k(self, name: str) -> str:
        return f"{self.prefix}alerts:{name}"

    @property
    def channel(self) -> str:
        """The full channel name."""
        return self.prefix + CHANNEL

    def send(
        self, events: Sequence[AlertEvent], *, now_ms: int | None = None, summarise: bool = True
    ) -> dict[str, int]:
        """Publish each event once (held over the limit); counts by outcome.

        With ``summarise``, also the summaries of owner-minutes that are over (a caller that
        summarises on its own clock, as the live sink does every second, passes False).
        """
        now = int(time.time() * 1000) if now_ms is None else now_ms
        minute = now // 60_000
        counts = {"sent": 0, "held": 0, "seen": 0}
        messages = [json.dumps(alert_message(e), sort_keys=True) for e in events]
        try:
            outcomes = self._publish(events, messages, minute)
        except NoScriptError:  # a new or flushed server: load the script, send again (the
            self.redis.script_load(_SEND)  # seen ids keep what went out from going twice)
            outcomes = self._publish(events, messages, minute)
        for e, message, outcome in zip(events, messages, outcomes, strict=True):
            counts[("seen", "sent", "held")[int(outcome)]] += 1
            if int(outcome) == 1:
                self._to_sns(e.owner, f"alert {e.symbol}", message, e.id)
        if summarise:
            self.summarise(now_ms=now)
        return counts

    def _publish(
        self, events: Sequence[AlertEvent], messages: Sequence[str], minute: int
    ) -> list[Any]:
        """The send script of every event in one round trip; their outcomes.

        By SHA, not through redis-py's pipelined scripts, which ask the server whether each
        script exists first: a second round trip per batch, many a second in the live flow.
        """
        if not events:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for e, message in zip(events, messages, strict=True):
            member = f"{e.owner}|{minute}"
            pipe.evalsha(
                self._send.sha, 5,
                self._k(f"seen:{e.id}"), self._k(f"count:{member}"), self._k(f"held:{member}"),
                self.channel, self._k("summaries"),
                message, self.max_per_minute, MEMORY_S, (minute + 1) * 60_000, member,
            )  # fmt: skip
        return list(pipe.execute())

    def summarise(self, *, now_ms: int | None = None) -> int:
        """Send the summary of every owner-minute that is over; how many went out."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        due = self.redis.zrangebyscore(self._k("summaries"), "-inf", now)
        sent = 0
        for raw in due:
            member = str(raw)
            owner, minute = member.rsplit("|", 1)
            iso = time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(int(minute) * 60))
            msg = self._summarise(
                keys=[self._k(f"held:{member}"), self._k("summaries"), self.channel],
                args=[member, owner, iso, self.max_per_minute],
            )
            if msg:
                sent += 1
                self._to_sns(owner, "alert summary", str(msg), f"summary:{member}")
        return sent

    def _to_sns(self, owner: str, subject: str, message: str, ident: str) -> None:
        if not self.sns_topic_arn:
            return
        mark = self._k(f"sns:{ident}")
        if self.redis.exists(mark):
            return
        if self._sns is None:
            self._sns = aws_client("sns", endpoint_url=self.endpoint_url, region=self.region)
        self._sns.publish(
            TopicArn=self.sns_topic_arn,
            Subject=subject[:100],
            Message=message,
            MessageAttributes={
                "owner": {"DataType": "String", "StringValue": owner},
                "event_id": {"DataType": "String", "StringValue": ident},
            },
        )
        self.redis.set(mark, "1", ex=MEMORY_S)

    def deliver(self, conn: psycopg.Connection[Any], events: Sequence[AlertEvent]) -> list[str]:
        """Store ``events``, send those not delivered yet, record them; the ids sent now."""
        todo = self.store(conn, events)
        self.complete(conn, todo)
        return [e.id for e in todo]

    @staticmethod
    def store(conn: psycopg.Connection[Any], events: Sequence[AlertEvent]) -> list[AlertEvent]:
        """Store ``events``; those not delivered yet, for :meth:`complete`.

        Once this returns, a crash loses nothing: :meth:`deliver_pending` sends what is
        stored and undelivered at the next start.
        """
        waiting = set(store.insert_events(conn, events))  # one statement: atomic
        return [e for e in events if e.id in waiting]

    def complete(
        self, conn: psycopg.Connection[Any], todo: Sequence[AlertEvent], *, summarise: bool = True
    ) -> None:
        """Send stored events and record them delivered.

        Each is published once whatever repeats this: the send remembers every id it published.
        """
        if todo:
            self.send(todo, summarise=summarise)
            _mark_delivered(conn, [e.id for e in todo])

    def deliver_pending(self, conn: psycopg.Connection[Any]) -> int:
        """Send events a crash left stored but undelivered; how many."""
        left = store.pending(conn)
        if left:
            self.send(left)
            _mark_delivered(conn, [e.id for e in left])
        return len(left)


def _mark_delivered(conn: psycopg.Connection[Any], ids: list[str]) -> None:
    """One UPDATE: atomic alone on an autocommit connection (no BEGIN and COMMIT round trips)."""
    if conn.autocommit:
        store.mark_delivered(conn, ids)
        return
    with conn.transaction():
        store.mark_delivered(conn, ids)


def announce_rules(client: redis.Redis, prefix: str, rule_id: str, change: str) -> None:
    """Tell the live flow a rule was added or removed (it reloads it within a second)."""
    client.publish(prefix + RULES_CHANNEL, json.dumps({"id": rule_id, "change": change}))
