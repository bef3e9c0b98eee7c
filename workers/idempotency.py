"""Every actor is idempotent by event id, as a Dramatiq middleware rather than code in each actor.

The dispatcher makes the Dramatiq message id the event id. Before an actor runs, a short lease
(SET NX) keeps a concurrent duplicate out; a duplicate of an event whose effect is already durable
is skipped. The processed marker is written only after the actor returned.

A duplicate that finds the lease held is not dropped but comes back when the lease would have run
out: if the holder died (a killed PTY host whose message Dramatiq requeued), the lease expires and
the returning copy takes the work over; while the holder lives (a long session renews its lease),
the copy waits as a standby, and once the work is done it finds the event processed.
"""

from __future__ import annotations

import logging

import redis
from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, SkipMessage

from events.streams import Names

log = logging.getLogger(__name__)

PROCESSED_TTL_SECONDS = 7 * 24 * 3600


class Idempotency(Middleware):
    def __init__(self, client: redis.Redis, names: Names, lease_seconds: int = 60) -> None:
        self.client = client
        self.names = names
        self.lease_seconds = lease_seconds

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        event_id = message.message_id
        if self.client.exists(self.names.processed(event_id)):
            log.info("skipping %s: event %s already processed", message.actor_name, event_id)
            raise SkipMessage(event_id)
        claim = self.names.claim(event_id)
        if not self.client.set(claim, message.actor_name, nx=True, ex=self.lease_seconds):
            back_in_ms = max(int(self.client.pttl(claim)), 0) + 500
            log.info("event %s is being processed elsewhere; back in %d ms", event_id, back_in_ms)
            broker.enqueue(message.copy(), delay=back_in_ms)
            raise SkipMessage(event_id)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        event_id = message.message_id
        with self.client.pipeline(transaction=True) as pipe:
            if exception is None:
                pipe.set(self.names.processed(event_id), "1", ex=PROCESSED_TTL_SECONDS)
            pipe.delete(self.names.claim(event_id))
            pipe.execute()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        """Skipped duplicates leave the other holder's lease alone."""
