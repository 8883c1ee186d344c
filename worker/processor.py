"""Handles one record of a node topic from decode to acknowledged outputs.

The contract with the consumer: :meth:`NodeProcessor.handle` returns only when the record's fate is
safely recorded (outputs acknowledged by the broker, a retry scheduled, or a trash row written), so
the consumer may then commit its offset. It never raises for a bad message.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka.structs import ConsumerRecord

from applications.client import ShoptetClient
from worker.consumer import RecordAbandoned
from worker.envelope import H, MalformedMessage, Message, ResultCode, encode_json
from worker.errors import (
    InstallDisabled,
    InstallNotFound,
    NodeError,
    OutputTooLarge,
    RetryableError,
    StopError,
    StoreUnavailable,
)
from worker.kafka import resend_until_acknowledged, unacknowledged
from worker.logging import bind_message
from worker.node import Batch, Connector, Node, NodeContext, Result
from worker.processes import HandledTally
from worker.router import Outgoing, cursor_message, route
from worker.runtime import Runtime
from worker.store import Install, TrashEntry
from worker.tasks import when_all_done
from worker.topology import NodeSpec, TopologyVersion
from worker.trash import record_entry, record_headers

log = structlog.get_logger("processor")

#: A message whose topology version this worker has not seen yet (a deploy still on its way).
UNKNOWN_VERSION_RETRY_SECONDS = 2.0
#: How long an ordered node waits in place for such a deploy before it retries the message.
UNKNOWN_VERSION_WAIT_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 600.0


#: How often a retry waiting in place checks that its partition was not rebalanced away.
IN_PLACE_CHECK_SECONDS = 1.0
#: The longest one retry waits in place (unless Shoptet's Retry-After asks for longer).
IN_PLACE_MAX_WAIT_SECONDS = 60.0

#: Backoff of a trash write while the store does not answer.
TRASH_RETRY_FIRST_SECONDS = 0.5
TRASH_RETRY_MAX_SECONDS = 30.0

#: A batch's outputs are awaited in chunks of this many, so memory stays flat however many it emits.
FLUSH_EVERY = 500


class Delivery:
    """Outputs of one input on their way to the broker, and how many went where (for the ledger).

    A batch's items are counted in the ledger as they are emitted, together with their outputs.
    Counted only when the batch's hop ended, an item whose branch ended before that left nothing
    in flight for the tracker, and the process was announced finished while the batch still ran.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.pending: list[tuple[Outgoing, asyncio.Future[Any]]] = []
        #: Outputs sent with ``send``: counted in the input's own ledger row, when its hop ends.
        self.node_outputs = 0
        self.sink_outputs = 0
        #: Retries an ordered node waited out in place (counted in the ledger like the others).
        self.retried_in_place = 0
        #: Outputs of the items a batch emitted: counted in the ledger with each item (``emit``).
        self._item_outputs = self._item_node_outputs = 0
        #: The ledger batches that count the items (and settle their outputs), oldest first.
        self._counting: list[asyncio.Future[None]] = []
        #: Item outputs since the last flush.
        self._unflushed = 0

    async def send(self, out: Outgoing) -> None:
        self.pending.append((out, await self.rt.send_output(out)))
        if out.to_sink:
            self.sink_outputs += 1
        else:
            self.node_outputs += 1
        if len(self.pending) >= FLUSH_EVERY:
            await self.flush()

    async def emit(self, message: Message, outs: list[Outgoing]) -> None:
        """One item of a batch (``message``): its outputs sent and counted in the ledger now."""
        sent: list[tuple[Outgoing, asyncio.Future[Any]]] = []
        try:
            for out in outs:
                sent.append((out, await self.rt.send_output(out)))
        finally:  # what went out is counted, also when an output could not go
            node = sum(1 for out, _ in sent if not out.to_sink)
            self._item_outputs += len(sent)
            self._item_node_outputs += node
            counting = self.rt.ledger.add(
                HandledTally.outputs_of(message, node_outputs=node, sink_outputs=len(sent) - node), sent
            )
            if not self._counting or self._counting[-1] is not counting:
                self._counting.append(counting)
        self._unflushed += len(sent)
        if self._unflushed >= FLUSH_EVERY:
            await self.flush()

    def has_outputs(self) -> bool:
        """Whether anything went out for this input: its own outputs or its items'."""
        return bool(self.node_outputs or self.sink_outputs or self._item_outputs)

    def take(self) -> list[tuple[Outgoing, asyncio.Future[Any]]]:
        """The outputs still on their way, handed to whoever settles them (the ledger batch)."""
        pending, self.pending = self.pending, []
        return pending

    async def flush(self) -> None:
        """Wait until the broker has every output; resend what failed until it does."""
        failed = await unacknowledged(self.take())
        await resend_until_acknowledged(failed, self.rt.send_output, what="outputs")
        counting, self._counting = self._counting, []
        for batch in counting:
            # shielded: the ledger batch is shared, and a cancelled wait here must not cancel it
            await asyncio.shield(batch)  # it resends until the broker has it all: it never fails
        self._unflushed = 0

    def tally(self, message: Message, outcome: str) -> HandledTally:
        """The input's row in the ledger: its own outputs (its items are counted already)."""
        return HandledTally.of(
            message,
            outcome=outcome,
            node_outputs=self.node_outputs,
            sink_outputs=self.sink_outputs,
            emitted=0,
            retried_in_place=self.retried_in_place,
            ended=self.node_outputs == 0 and self._item_node_outputs == 0,
        )

    def recorded(self, last: asyncio.Future[None]) -> asyncio.Future[None]:
        """Done when ``last`` (the input's own ledger batch) and the ledger batches that counted its
        items are: only then is every count and output with the broker."""
        earlier = [batch for batch in self._counting if not batch.done()]
        return when_all_done([*earlier, last]) if earlier else last


def backoff_seconds(interval: float, hops: int) -> float:
    """Exponential backoff from the node's interval, capped, with jitter so retries spread out."""
    delay = min(interval * (2**hops), max(interval, MAX_BACKOFF_SECONDS))
    return delay * random.uniform(0.8, 1.2)


#: Where the backoff under a ``Retry-After`` starts (see :func:`retry_delay`).
RETRY_AFTER_BACKOFF_BASE_SECONDS = 1.0


def retry_delay(retry_after: float | None, interval: float, hops: int) -> float:
    """Seconds until the next attempt of a message retried for the ``hops``-th time.

    A ``Retry-After`` (Shoptet's 429, or the 5 s of a 423 lock) is a floor, not the whole answer.
    Shoptet's is a date one second ahead, so taken as given it sent every 429'd message of a token
    back within the same second, and a 429 that keeps coming (another client on the token) spent all
    of a message's hops in seconds. It still backs off exponentially, from 1 s, with jitter.
    """
    if retry_after is None:
        return backoff_seconds(interval, hops)
    return max(retry_after * random.uniform(1.0, 1.2), backoff_seconds(RETRY_AFTER_BACKOFF_BASE_SECONDS, hops))


class Feed(Protocol):
    """What the processor reads of the consumer that hands it records (``ManagedConsumer``)."""

    #: One message per install at a time, in order: a retryable failure is then retried in place,
    #: holding the install's next messages back.
    ordered: bool
    #: Counts rebalances: a retry waiting in place gives its record up once it changes.
    generation: int


@dataclass(slots=True)
class _NoConsumer:
    """A processor driven without a consumer (tests): the node's own ordering, no rebalances."""

    ordered: bool
    generation: int = 0


class NodeProcessor:
    def __init__(self, runtime: Runtime, node: Node) -> None:
        self.rt = runtime
        self.node = node
        self.topic = runtime.topics.node(node.name)
        self.log = log.bind(node_name=node.name)  # bound once: binding per message showed in profiles
        # the node's kind, found once: isinstance on an ABC per message showed in profiles
        self.connector = node if isinstance(node, Connector) else None
        self.batch = node if isinstance(node, Batch) else None
        #: The consumer that hands this processor its records (the worker sets it): read for its
        #: current ``ordered`` and ``generation`` rather than copies kept in step with it.
        self.feed: Feed = _NoConsumer(node.ordered)

    # --- entry point ---------------------------------------------------------------------------
    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> asyncio.Future[None] | None:
        """Run the node on one record; the returned future is done when its fate is recorded."""
        try:
            message = Message.decode(record.value, record.headers)
        except MalformedMessage as exc:
            bind_message()  # the previous message's fields must not name this one
            await self.trash(record, None, exc, reason_class="MalformedMessage")
            tally = HandledTally.trashed_unread(record_headers(record))  # (a replay is counted again)
            return None if tally is None else self.rt.ledger.add(tally)
        bind_message(
            correlation_id=message.correlation_id,
            process_id=message.process_id,
            topology=message.headers.get(H.TOPOLOGY_NAME),
            node=message.headers.get(H.NODE_ID),
            user=message.user,
        )
        started = time.perf_counter()
        outcome = "error"
        try:
            outcome, recorded = await self._process(record, message)
        finally:
            if self.rt.metrics is not None:
                self.rt.metrics.observe_message(self.node.name, outcome, time.perf_counter() - started)
        return recorded

    async def _process(
        self, record: ConsumerRecord[bytes, bytes], message: Message
    ) -> tuple[str, asyncio.Future[None]]:
        name = message.headers[H.TOPOLOGY_NAME]
        version = message.headers[H.TOPOLOGY_VERSION]
        tv = self.rt.catalog.get(name, version)
        if tv is None and self.feed.ordered:
            tv = await self._await_version(name, version)
        delivery = Delivery(self.rt)
        if tv is None:
            error = RetryableError(f"topology {name}@{version} is not known to this worker (yet)")
            retried = await self.retry(
                record, message, None, error, interval=UNKNOWN_VERSION_RETRY_SECONDS, delivery=delivery
            )
            return self._finish(message, "retry" if retried else "trash", delivery)
        node_id = message.headers[H.NODE_ID]
        spec = tv.topology.nodes.get(node_id)
        if spec is None or spec.node != self.node.name:
            missing = StopError(f"topology {name}@{version} has no node {node_id!r} of type {self.node.name!r}")
            await self.trash(record, message, missing)
            return self._finish(message, "trash", delivery)
        outcome = "ok"
        generation = self.feed.generation
        while True:
            try:
                ctx = await self._context(message, tv, node_id, spec)
                result = await self._call(message, ctx, tv, node_id, delivery)
                await self._route_result(message, ctx, tv, node_id, result, delivery)
            except RetryableError as exc:
                again = await self._retry_in_place(message, spec, exc, generation, delivery)
                if again is not None:
                    message = again
                    continue
                retried = await self.retry(record, message, spec, exc, delivery=delivery)
                outcome = "retry" if retried else "trash"
            except NodeError as exc:
                await self.trash(record, message, exc)
                outcome = "trash"
            except Exception as exc:  # a bug in a node: keep the message for an operator, keep going
                log.exception("node raised an unexpected error")
                await self.trash(record, message, exc)
                outcome = "trash"
            break
        # items a batch emitted before failing are delivered too: nothing is lost
        return self._finish(message, outcome, delivery)

    async def _await_version(self, name: str, version: str) -> TopologyVersion | None:
        """For an ordered node, wait here for a deploy this worker has not read yet: sent to the
        retry topic, the message let the install's next one go first, and an older status update
        landed after a newer one. None after ``UNKNOWN_VERSION_WAIT_SECONDS`` (then it retries)."""
        generation = self.feed.generation
        loop = asyncio.get_running_loop()
        until = loop.time() + UNKNOWN_VERSION_WAIT_SECONDS
        while loop.time() < until:
            await self._hold(IN_PLACE_CHECK_SECONDS, generation)
            tv = self.rt.catalog.get(name, version)
            if tv is not None:
                return tv
        return None

    async def _retry_in_place(
        self, message: Message, spec: NodeSpec, error: RetryableError, generation: int, delivery: Delivery
    ) -> Message | None:
        """For an ordered node, wait out the backoff here and return the message to run again (None
        once its retries are spent, or for a node that is not ordered).

        Sent to the retry topic, the message would let the install's next one go first: an older
        status update retried later overwrote a newer one. Here the runner of the install's queue
        waits, so its next messages wait too (other installs do not).
        """
        if not self.feed.ordered or delivery.has_outputs() or error.resume is not None:
            # a batch that emitted before failing: given up here (a rebalance, a stop), its items
            # would be out without their count in the ledger; the retry topic keeps both. A node
            # that stopped part-way (stock movements after their first 300 items): its resume point
            # lived only in this runner, and the partition's next owner read the original record
            # and sent the calls that went through again (relative stock changes applied twice);
            # the retry topic carries the cursor. Its install's next messages may then go first.
            return None
        max_hops, base = self._retry_policy(spec)
        hops = message.hops
        if hops >= max_hops:
            return None  # retry() sends it to trash
        # capped: the partition's committed offset waits with it, and a rebalance starts it over
        delay = min(retry_delay(error.retry_after, base, hops), max(IN_PLACE_MAX_WAIT_SECONDS, error.retry_after or 0))
        log.info(
            "retry in place, holding the install's next messages",
            error=error.message,
            status=error.status,
            hop=hops + 1,
            delay=round(delay, 2),
        )
        if self.rt.metrics is not None:
            self.rt.metrics.retried(self.node.name)
        await self._hold(delay, generation)
        delivery.retried_in_place += 1
        return message.with_headers(repeat_hops=str(hops + 1))

    async def _hold(self, seconds: float, generation: int) -> None:
        """Wait here, holding the record; once the consumer's generation moved on from
        ``generation`` (a rebalance, a stop), give it up: its partition's owner reads it again."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while (left := until - loop.time()) > 0:
            await asyncio.sleep(min(left, IN_PLACE_CHECK_SECONDS))
            if self.feed.generation != generation:
                raise RecordAbandoned

    def _retry_policy(self, spec: NodeSpec | None, interval: float | None = None) -> tuple[int, float]:
        """Max hops and the backoff's base interval: the topology's, else the settings' defaults."""
        settings = self.rt.settings
        max_hops = spec.retry.max_hops if spec and spec.retry.max_hops is not None else settings.default_retry_max_hops
        base = interval or (spec.retry.interval if spec and spec.retry.interval else None)
        return max_hops, base or settings.default_retry_interval_seconds

    def _finish(self, message: Message, outcome: str, delivery: Delivery) -> tuple[str, asyncio.Future[None]]:
        """Count the message in the process ledger; its fate is recorded when the broker has the
        outputs and the ledger record, which the ledger batch settles together (nothing is awaited
        here, so the node takes its next message meanwhile; at-least-once: the ledger may count a
        redelivery twice)."""
        last = self.rt.ledger.add(delivery.tally(message, outcome), delivery.take())
        return outcome, delivery.recorded(last)

    # --- the node call -------------------------------------------------------------------------
    async def _context(self, message: Message, tv: TopologyVersion, node_id: str, spec: NodeSpec) -> NodeContext:
        ctx = NodeContext(
            store=self.rt.store,
            settings=self.rt.settings,
            node_id=node_id,
            options=spec.options,
            log=self.log,
            client_factory=self._client_for,
        )
        if not self.node.needs_install:
            ctx.webhook_events = self.rt.catalog.webhook_events()
            return ctx
        application = message.application or tv.topology.application_of(node_id, self.node.application)
        if not message.user or not application:
            raise InstallNotFound("message has no `user`/`application` header; the node needs an install")
        install = await self.rt.installs.get(message.user, application)
        if install is None:
            raise InstallNotFound(f"no install for user {message.user!r} and application {application!r}")
        if not install.enabled and not self.node.accepts_disabled_install:
            raise InstallDisabled(f"install {message.user!r}/{application!r} is disabled")
        ctx.install = install
        # an install's topologies are those of its application: webhooks-subscribe registers theirs
        ctx.webhook_events = self.rt.catalog.webhook_events(install.application)
        ctx.application = self.rt.applications.get(install.application)
        ctx.shoptet = self._client_for(install)
        return ctx

    def _client_for(self, install: Install) -> ShoptetClient:
        return self.rt.shoptet_client(install)

    async def _call(
        self,
        message: Message,
        ctx: NodeContext,
        tv: TopologyVersion,
        node_id: str,
        delivery: Delivery,
    ) -> Result:
        if self.connector is not None:
            return await self.connector.process(message, ctx)
        batch = self.batch
        assert batch is not None

        async def emit(body: Any) -> None:
            overrides = _install_headers(ctx)
            outs = route(self.rt.topics, tv, node_id, message, body, new_process=True, overrides=overrides)
            await delivery.emit(message, outs)
            if self.rt.metrics is not None:
                self.rt.metrics.items_emitted(self.node.name)

        ctx.delivered = delivery.flush
        return await batch.process(message, ctx, emit)

    async def _route_result(
        self,
        message: Message,
        ctx: NodeContext,
        tv: TopologyVersion,
        node_id: str,
        result: Result,
        delivery: Delivery,
    ) -> None:
        code = result.code
        if code in (ResultCode.REPEAT, ResultCode.LIMIT_EXCEEDED):
            raise RetryableError(result.message or f"node asked to repeat ({int(code)})")
        if code == ResultCode.STOP_AND_FAIL:
            raise StopError(result.message or "node stopped the process (1006)")
        if code == ResultCode.DO_NOT_CONTINUE:
            log.info("branch stopped", reason=result.message)
            return
        if code in (ResultCode.BATCH_CURSOR_WITH_ITEMS, ResultCode.BATCH_CURSOR_ONLY):
            if result.cursor is None:
                raise StopError(f"result {int(code)} without a cursor")
            await delivery.send(Outgoing(self.topic, cursor_message(message, result)))
            return
        if self.batch is not None:
            return  # items were routed as they were emitted
        only = result.forward_to if code == ResultCode.FORWARD_TO else ()
        body = result.body if result.body is not None else message.body
        for out in route(self.rt.topics, tv, node_id, message, body, only=only, overrides=_install_headers(ctx)):
            await delivery.send(out)

    # --- retry and trash -----------------------------------------------------------------------
    async def retry(
        self,
        record: ConsumerRecord[bytes, bytes],
        message: Message,
        spec: NodeSpec | None,
        error: RetryableError,
        *,
        interval: float | None = None,
        delivery: Delivery | None = None,
    ) -> bool:
        """Schedule another attempt; past max hops, trash instead and return False."""
        max_hops, base = self._retry_policy(spec, interval)
        hops = message.hops
        if self.batch is not None and _moved_on(message, error):
            # the next step of the batch's paging: like a cursor hop (cursor_message), none spent yet
            hops = 0
        if hops >= max_hops:
            await self.trash(record, message, error, note=f"gave up after {hops} retries")
            return False
        delay = retry_delay(error.retry_after, base, hops)
        again = message.with_headers(
            # a node that stopped part-way says where to go on; otherwise a batch keeps its page
            cursor=_resume_cursor(error) or message.headers.get(H.CURSOR),
            repeat_hops=str(hops + 1),
            repeat_max_hops=str(max_hops),
            repeat_interval=str(int(base * 1000)),
            retry_target_topic=record.topic,
            retry_due_at=f"{time.time() + delay:.3f}",
            result_code=str(int(ResultCode.REPEAT)),
            result_message=error.message[:500],
        )
        # measured whole: its cursor (a node's resume point) may be most of it
        out = Outgoing(self.rt.topics.retry, again, measure_whole=True)
        try:
            if delivery is None:
                delivery = Delivery(self.rt)
                await delivery.send(out)
                await delivery.flush()
            else:
                await delivery.send(out)
        except OutputTooLarge as exc:  # raised out of this handler, it would fail the record for good
            await self.trash(record, message, error, note=exc.message)
            return False
        log.info("retry scheduled", error=error.message, status=error.status, hop=hops + 1, delay=round(delay, 2))
        if self.rt.metrics is not None:
            self.rt.metrics.retried(self.node.name)
        return True

    async def trash(
        self,
        record: ConsumerRecord[bytes, bytes],
        message: Message | None,
        error: BaseException,
        *,
        reason_class: str | None = None,
        note: str = "",
    ) -> None:
        headers = message.headers if message else record_headers(record)
        cursor = _resume_cursor(error)
        if cursor is not None:  # a replay must start where the node stopped, as a retry would
            headers = {**headers, H.CURSOR: cursor}
        text = getattr(error, "message", None) or str(error) or type(error).__name__
        entry = record_entry(
            record,
            headers=headers,
            keep_raw=message is None,
            node_id=headers.get(H.NODE_ID),
            node_name=self.node.name,
            topology_name=headers.get(H.TOPOLOGY_NAME),
            topology_version=headers.get(H.TOPOLOGY_VERSION),
            user=headers.get(H.USER),
            correlation_id=headers.get(H.CORRELATION_ID),
            process_id=headers.get(H.PROCESS_ID),
            attempts=(message.hops if message else 0) + 1,
            error_class=reason_class or type(error).__name__,
            error_message=f"{text} ({note})" if note else text,
            http_status=getattr(error, "status", None),
            error_body=getattr(error, "body", None),
            body=message.body if message else None,
        )
        entry_id = await self._store_trash(entry)
        log.warning(
            "message moved to trash",
            trash_id=entry_id,
            error_class=entry.error_class,
            error=entry.error_message,
        )
        if self.rt.metrics is not None:
            self.rt.metrics.trashed(self.node.name)

    async def _store_trash(self, entry: TrashEntry) -> int:
        """Write the trash row, waiting out a store outage here: raised, the consumer ran the node
        again on the record, and work that went through (a stock movement call, emitted items) was
        done again, with the resume point lost. A rebalance or a stop gives the record up."""
        generation = self.feed.generation
        delay = TRASH_RETRY_FIRST_SECONDS
        while True:
            try:
                return await self.rt.store.add_trash(entry)
            except StoreUnavailable as exc:
                log.warning("trash not written: the store does not answer; trying again", error=str(exc))
            await self._hold(delay, generation)
            delay = min(delay * 2, TRASH_RETRY_MAX_SECONDS)


def _resume_cursor(error: BaseException) -> str | None:
    """The ``cursor`` header of a node error that says where to go on (``NodeError.resume``)."""
    resume = error.resume if isinstance(error, NodeError) else None
    return None if resume is None else encode_json(resume).decode()


def _moved_on(message: Message, error: RetryableError) -> bool:
    """Whether the failed attempt got further than the one before: its resume point differs from
    the cursor it ran with.

    For a batch, whose resume point is where its paging stands, the retries then start over: counted
    over the whole run, ten transient errors spread over a long list batch sent it to trash although
    every attempt emitted pages the one before had not. (A connector's resume point may change on
    every attempt without getting anywhere, so its retries keep counting.)
    """
    if error.resume is None:
        return False
    try:
        return error.resume != message.cursor
    except ValueError:  # a cursor header that is no JSON: whatever the node resumes from is new
        return True


def _install_headers(ctx: NodeContext) -> dict[str, str]:
    """A node that found its install itself (job finished) stamps user/application on its outputs."""
    if ctx.install is None:
        return {}
    return {H.USER: ctx.install.user, H.APPLICATION: ctx.install.application}
