"""Decoding the event an actor works on, once, as a Dramatiq middleware rather than code in each actor.

An actor declared with ``envelope=True`` takes one argument, the event's wire form (what the
dispatcher enqueues). Before it runs, this middleware decodes the envelope and makes the event the
current one (``current_event()``) and its correlation id the one every log line carries; both are
cleared when the message is done. A message whose argument is no envelope goes to the dead letters
without running. The event id is the message id, which the ``Idempotency``
middleware keys its lease and processed marker on.

Dramatiq runs the middleware on the worker thread and an async actor on its event loop thread; a
coroutine handed to that loop starts with a copy of the worker thread's context variables (as
Dramatiq's own ``CurrentMessage`` relies on), so the actor sees what was set here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from dramatiq import Broker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware, SkipMessage
from pydantic import ValidationError

from events.envelope import Event
from services.observability import correlation_id

log = logging.getLogger(__name__)

_EVENT: ContextVar[Event | None] = ContextVar("event", default=None)


@contextmanager
def handling(event: Event) -> Iterator[None]:
    """``event`` is the current one, and its correlation id the logged one, while the block runs:
    for work started outside Dramatiq (the dispatcher's direct lane). A coroutine handed to the
    event loop in the block keeps them, as it starts with a copy of this context."""
    event_token, correlation_token = _EVENT.set(event), correlation_id.set(event.correlation_id)
    try:
        yield
    finally:
        correlation_id.reset(correlation_token)
        _EVENT.reset(event_token)


def current_event() -> Event:
    """The event the running actor works on."""
    event = _EVENT.get()
    if event is None:
        raise RuntimeError("no event: the actor is not declared with envelope=True, or runs outside Dramatiq")
    return event


class EventContext(Middleware):
    @property
    def actor_options(self) -> set[str]:
        return {"envelope"}

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if not broker.get_actor(message.actor_name).options.get("envelope"):
            return
        [envelope] = message.args
        try:
            event = Event.from_wire(envelope)
        except ValidationError as exc:
            # No retry decodes it: straight to the dead letters. (Dramatiq only logs other exceptions
            # raised here, and would run the actor anyway.)
            log.error(
                "%s: message %s carries no event envelope: %s", message.actor_name, message.message_id, exc
            )
            message.fail()
            raise SkipMessage(str(exc)) from exc
        _EVENT.set(event)
        correlation_id.set(event.correlation_id)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        self._clear()

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._clear()

    @staticmethod
    def _clear() -> None:
        # The worker thread's context outlives the message: the next one must not inherit it.
        _EVENT.set(None)
        correlation_id.set(None)
