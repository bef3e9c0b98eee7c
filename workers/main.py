"""``agentapi worker``: Dramatiq worker threads for some queues, plus their stream dispatchers."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from concurrent.futures import Future, wait

from dramatiq import Worker
from dramatiq.asyncio import get_event_loop_thread

from events.connection import thread_redis
from events.streams import Names, WorkKind
from schemas.settings import Settings
from services.gc_tuning import tune_gc
from services.observability import configure_process
from workers.audit_writer import AuditWriter
from workers.broker import make_broker
from workers.context import WorkerContext, set_context
from workers.dispatcher import consumer_name, dispatchers
from workers.lifecycle import run_reconciler
from workers.loop_reader import LoopReader
from workers.placement import advertise

log = logging.getLogger(__name__)

IDLE_POLL_MS = 1_000
# How long a stopping worker waits for its session hosts to hand their sessions over.
HANDOVER_WAIT_SECONDS = 10


def start_readers(readers: list[LoopReader], redis_url: str, stop: threading.Event) -> list[Future[None]]:
    """The loop readers, on the event loop Dramatiq's AsyncIO middleware started with the worker."""
    if not readers:
        return []
    loop_thread = get_event_loop_thread()
    if loop_thread is None:
        raise RuntimeError("the direct lane needs Dramatiq's AsyncIO middleware")
    running = [asyncio.run_coroutine_threadsafe(r.run(redis_url, stop), loop_thread.loop) for r in readers]
    for future in running:
        future.add_done_callback(_report_failure)
    return running


def _report_failure(reader: Future[None]) -> None:
    # As a dispatcher thread's exception is printed when the thread ends.
    if not reader.cancelled() and (exc := reader.exception()) is not None:
        log.error("a loop reader stopped", exc_info=exc)


def run_worker(settings: Settings, queues: list[str], threads: int = 8) -> None:
    configure_process(settings, "worker")
    broker = make_broker(settings)
    context = WorkerContext(settings)
    set_context(context)
    from workers.actors import load_actors

    kinds = [WorkKind(queue) for queue in queues]
    actors = load_actors(kinds)
    tune_gc(settings)
    client = thread_redis(settings.redis_url, decode_responses=True)
    stop = threading.Event()
    # Audit events skip Dramatiq: the writer takes them from their stream in batches itself.
    dispatched = [kind for kind in kinds if kind is not WorkKind.AUDIT]
    dispatch = dispatchers(
        client,
        Names(settings.redis_prefix),
        broker,
        actors,
        dispatched,
        settings.dispatch_claim_idle_ms,
        direct_slots=threads,
    )
    # Idle worker threads also wake at this interval (a sessions pool holds hundreds of threads); the
    # tools pool's is a setting of its own.
    poll_ms = settings.worker_poll_max_ms if WorkKind.TOOLS in kinds else IDLE_POLL_MS
    worker = Worker(broker, queues=set(queues), worker_threads=threads, worker_timeout=poll_ms)
    consumers = dispatch.consumers
    threads_ = [threading.Thread(target=c.run, args=(stop,), name=f"dispatch-{c.stream}") for c in consumers]
    if WorkKind.SESSIONS in kinds:
        # A host takes only the sessions it has threads for; the rest wait in the queue for another.
        worker.queue_prefetch = threads
        context.load.slots = threads
        names = Names(settings.redis_prefix)
        threads_.append(
            threading.Thread(
                target=advertise,
                args=(client, names, context.worker_id, context.load, stop),
                name="advertise",
            )
        )
        threads_.append(threading.Thread(target=run_reconciler, args=(settings, stop), name="reconciler"))
    worker.start()
    readers = start_readers(dispatch.readers, settings.redis_url, stop)
    if WorkKind.AUDIT in kinds:
        writer = AuditWriter(settings, client, consumer_name())
        threads_.append(threading.Thread(target=writer.run, args=(stop,), name="audit-writer"))
    for thread in threads_:
        thread.start()

    def shutdown(signum: int, _: object) -> None:
        log.info("worker stopping on signal %d", signum)
        context.draining.set()
        # A stopping worker takes no more sessions: its idle threads took back the sessions it was
        # handing over, again and again, until it stopped, before another worker could (10-20 s).
        # Its other consumers (the delay queue's) go on and keep its heartbeat. Stopped rather than
        # paused: Dramatiq's paused consumer goes through its restart path, a 3 s sleep that
        # ``worker.stop`` then waited out; a stopped one only leaves its loop (acks still go through
        # its Redis consumer, which ``worker.stop`` closes last).
        sessions_consumer = worker.consumers.get(WorkKind.SESSIONS.value)
        if sessions_consumer is not None:
            sessions_consumer.stop()
        stop.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    log.info("worker %s serving %s", consumers[0].consumer if consumers else "-", ", ".join(queues))
    stop.wait()
    for thread in threads_:
        thread.join()
    wait(readers)
    # Session hosts hand their sessions over first: Dramatiq's stop would end their event loop after
    # its timeout, freezing the slower ones until their heartbeat lapsed (4 of 10 sessions took 15 s).
    deadline = time.monotonic() + HANDOVER_WAIT_SECONDS
    while context.load.hosted and time.monotonic() < deadline:
        time.sleep(0.1)
    # Messages in flight finish or go back to their queue for another worker.
    worker.stop(timeout=10_000)
    broker.close()
    client.close()
