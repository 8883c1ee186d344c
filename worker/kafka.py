"""aiokafka clients configured from settings (plain, TLS, SASL PLAIN/SCRAM) and topic set-up."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord

from worker.envelope import Message
from worker.settings import Settings
from worker.tasks import backoff_delays

log = structlog.get_logger("kafka")

T = TypeVar("T")


def client_options(settings: Settings, bootstrap_servers: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


#: Keys whose hash is remembered before the memo starts over (e-shops and process ids).
KEY_HASH_MEMO_SIZE = 100_000
_key_hashes: dict[bytes, int] = {}


def key_hash(key: bytes) -> int:
    """Kafka's default partitioning hash (murmur2, positive), remembered per key.

    aiokafka's murmur2 is pure Python and ran once per record; the keys repeat (one per e-shop).
    """
    value = _key_hashes.get(key)
    if value is None:
        if len(_key_hashes) >= KEY_HASH_MEMO_SIZE:
            _key_hashes.clear()
        value = _key_hashes[key] = murmur2(key) & 0x7FFFFFFF
    return value


def partition_for_key(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's ``DefaultPartitioner`` with the hash remembered: the same key, the same partition."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[key_hash(key) % len(all_partitions)]


#: How long a topic's partition list is trusted before it is looked up again.
PARTITIONS_TTL_SECONDS = 30.0


class PartitionLists:
    """Each topic's partitions as the producer's metadata gives them, looked up again after ``ttl``.

    For the writers that pick a record's partition themselves (record batches, the ledger): they
    need the list on every record, and asking the producer each time showed in profiles.
    """

    def __init__(
        self, producer: AIOKafkaProducer, ttl: float = PARTITIONS_TTL_SECONDS, *, give_up_after: float | None = None
    ) -> None:
        self.producer = producer
        self.ttl = ttl
        #: Seconds a topic never known may stay unanswered before the lookup raises (None: never).
        self.give_up_after = give_up_after
        self._known: dict[str, tuple[list[int], float]] = {}
        #: Topics given up on, with when and why: their next lookups within ``ttl`` fail at once.
        self._missing: dict[str, tuple[float, KafkaError]] = {}

    async def of(self, topic: str) -> list[int]:
        """The topic's partitions, without failing a record for late metadata.

        While the broker cannot say (restarting, a metadata timeout, a topic not back yet), the last
        list known serves for another ``ttl``; before there is one, the lookup is tried again with
        backoff, for ``give_up_after`` seconds. Raising at once sent a node's message to trash during
        a broker restart, and left the ledger batch, whose records' offsets wait on it, unsettled
        (the ledger never gives up). Giving up at all is for a topic that stays missing (deleted,
        not created, refused by an ACL): its message goes to trash with the reason, and so do the
        topic's next ones for ``ttl`` without waiting. aiokafka reports a broker it cannot reach as
        an unknown topic too, so the wait is long enough for a broker restart.
        """
        known = self._known.get(topic)
        now = time.monotonic()
        if known is not None and now - known[1] < self.ttl:
            return known[0]
        missing = self._missing.get(topic)
        if missing is not None and now - missing[0] < self.ttl:
            raise missing[1]  # each waiting in turn held a missing sink's messages for hours
        delays = backoff_delays(0.5, 10.0)
        while True:
            try:
                partitions = sorted(await self.producer.partitions_for(topic))
            except KafkaError as exc:
                reason = str(exc) or type(exc).__name__
                if known is not None:
                    log.warning("topic partitions unknown; using the last list", topic=topic, error=reason)
                    self._known[topic] = (known[0], now)
                    return known[0]
                if self.give_up_after is not None and time.monotonic() - now > self.give_up_after:
                    self._missing[topic] = (time.monotonic(), exc)
                    raise
                delay = next(delays)
                log.warning("topic partitions unknown; asking again", topic=topic, error=reason, delay=delay)
                await asyncio.sleep(delay)
                continue
            self._known[topic] = (partitions, now)
            self._missing.pop(topic, None)
            return partitions


#: The largest record the producer sends (aiokafka's default, just under Kafka's default
#: ``message.max.bytes``): a larger one the broker refuses every time.
MAX_RECORD_BYTES = 1 << 20


def make_producer(settings: Settings, bootstrap_servers: str) -> AIOKafkaProducer:
    # acks=all: an output counts as delivered only when the cluster has it; the input's offset is
    # committed after that, which is what makes the pipeline at-least-once.
    return AIOKafkaProducer(
        **client_options(settings, bootstrap_servers),
        acks="all",
        partitioner=partition_for_key,
        linger_ms=2,
        max_batch_size=1 << 20,
        max_request_size=MAX_RECORD_BYTES,
        request_timeout_ms=30_000,
    )


#: aiokafka's own request timeout.
DEFAULT_REQUEST_TIMEOUT_MS = 40_000


#: A consumer whose read-ahead is full does not fetch until its records finish, which may take
#: longer than any fixed interval (an ordered writer waiting out a Shoptet outage, a node type behind
#: one slow shop). Under aiokafka's poll interval (it was 10 minutes) the member then left its group
#: and its partitions went to another member before the revocation could wait for the records
#: still running, so they ran twice (a stock movement applied twice). Heartbeats keep a live member
#: in its group, and ``/healthz`` reports a consumer loop that died.
NEVER_LEAVE_FOR_NOT_POLLING_MS = 2**31 - 1


def make_consumer(settings: Settings, bootstrap_servers: str, *topics: str, group_id: str | None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        **client_options(settings, bootstrap_servers),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=500,
        max_poll_interval_ms=NEVER_LEAVE_FOR_NOT_POLLING_MS,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        # a JoinGroup is answered when every member has rejoined, which may take the whole
        # rebalance timeout: under aiokafka's 40 s default the others timed out and rejoined again
        request_timeout_ms=max(DEFAULT_REQUEST_TIMEOUT_MS, settings.kafka_rebalance_timeout_ms + 5_000),
        heartbeat_interval_ms=max(500, settings.kafka_session_timeout_ms // 4),
    )


async def send_message(producer: AIOKafkaProducer, topic: str, message: Message) -> asyncio.Future[Any]:
    """Queue one message; the returned future resolves when the broker acknowledged it."""
    return await producer.send(topic, message.encode_body(), key=message.key(), headers=message.kafka_headers())


#: Queues one item for the broker and returns the future of its acknowledgement.
Send = Callable[[T], Awaitable["asyncio.Future[Any]"]]


async def unacknowledged(pending: Iterable[tuple[T, asyncio.Future[Any]]]) -> list[T]:
    """Wait for every acknowledgement; the items the broker did not take (a KafkaError: timeouts,
    leader changes, broker gone).

    Waited for with ``asyncio.wait``, which leaves them be when the waiter is cancelled (a stop):
    an acknowledgement is shared by a whole record batch, and awaited directly, it was cancelled
    with the waiter for every record of the batch, and the ledger batch waiting on it never ended.
    """
    pending = list(pending)
    waiting = {ack for _, ack in pending if not ack.done()}  # a record batch's is shared: once
    if waiting:
        await asyncio.wait(waiting)
    return [item for item, ack in pending if ack.cancelled() or ack.exception() is not None]


async def send_all(items: Iterable[T], send: Send[T]) -> list[tuple[T, asyncio.Future[Any]]]:
    """Queue every item; one that cannot even be queued gets a failed acknowledgement."""
    pending = []
    for item in items:
        try:
            ack = await send(item)
        except KafkaError as exc:
            ack = asyncio.get_running_loop().create_future()
            ack.set_exception(exc)
        pending.append((item, ack))
    return pending


async def resend_until_acknowledged(failed: list[T], send: Send[T], *, what: str) -> None:
    """Send ``failed`` again, backing off from 0.5 s to 10 s, until the broker has all of them.

    At-least-once needs this: an output or ledger record the broker never took must not let the
    input's offset move, and giving up would lose it.
    """
    delays = backoff_delays(0.5, 10.0)
    while failed:
        delay = next(delays)
        log.warning(f"broker did not acknowledge {what}; sending again", count=len(failed), delay=delay)
        await asyncio.sleep(delay)
        failed = await unacknowledged(await send_all(failed, send))


async def read_from_start(
    consumer: AIOKafkaConsumer,
    topic: str,
    handle: Callable[[ConsumerRecord[bytes, bytes]], None],
    *,
    default_partitions: Iterable[int] = (),
) -> list[TopicPartition]:
    """Assign every partition of ``topic`` (no group), read it from the start up to its current end.

    The consumer must be started. Returns the partitions, assigned and positioned at the end, so a
    caller can go on following the topic.
    """
    partitions = consumer.partitions_for_topic(topic) or set(default_partitions)
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    if not tps:
        return tps
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    ends = await consumer.end_offsets(tps)
    while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
        batches = await consumer.getmany(timeout_ms=500)
        for records in batches.values():
            for record in records:
                handle(record)
    return tps


class TopicsNotCreated(KafkaError):
    """The cluster refused to create topics the worker needs (a replication factor above its
    brokers, a policy, a missing CREATE permission)."""


def topics_refused(topic_errors: Iterable[tuple[Any, ...]]) -> list[str]:
    """``topic: reason`` for each topic a CreateTopics answer refused.

    aiokafka returns the answer instead of raising for it: a refused topic was logged as created,
    and the worker ran on with consumers that got no partitions and outputs that went to trash
    after waiting 10 minutes for their topic."""
    refused = []
    for topic, code, *message in topic_errors:
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        reason = message[0] if message and message[0] else for_code(code).__name__
        refused.append(f"{topic}: {reason}")
    return refused


async def ensure_topics(
    settings: Settings, bootstrap_servers: str, topics: Iterable[str], *, configs: dict[str, str] | None = None
) -> None:
    """Create missing topics with the configured partitions and replication factor (and ``configs``)."""
    admin = AIOKafkaAdminClient(**client_options(settings, bootstrap_servers))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(topics) - existing)
        if not missing:
            return
        new = [
            NewTopic(t, settings.kafka_partitions, settings.kafka_replication_factor, topic_configs=configs or {})
            for t in missing
        ]
        try:
            response = await admin.create_topics(new)
        except TopicAlreadyExistsError:
            response = None  # another worker created them first
        if response is not None:
            refused = topics_refused(response.topic_errors)
            if refused:
                raise TopicsNotCreated("Kafka did not create " + "; ".join(refused))
        log.info("topics created", topics=missing)
    finally:
        await admin.close()


async def cleanup_policy(settings: Settings, bootstrap_servers: str, topic: str) -> str:
    """The topic's ``cleanup.policy`` as the cluster reports it (``delete`` when it names none)."""
    admin = AIOKafkaAdminClient(**client_options(settings, bootstrap_servers))
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    for resource in response.resources:
        error_code, error_message, _type, _name, entries = resource[:5]
        if error_code:
            raise KafkaError(f"describing {topic}: {error_message}")
        for entry in entries:
            if entry[0] == "cleanup.policy":
                return str(entry[1])
    return "delete"


#: The control topic keeps the latest record of every key (each version, each pointer) for good.
CONTROL_TOPIC_CONFIGS = {"cleanup.policy": "compact"}


async def ensure_control_topic(settings: Settings, bootstrap: str, topic: str) -> None:
    """One partition, compacted: the latest record of every key (each version, each pointer) is
    kept for good, where plain retention would drop deploys older than a week."""
    one_partition = settings.model_copy(update={"kafka_partitions": 1})
    await ensure_topics(one_partition, bootstrap, [topic], configs=CONTROL_TOPIC_CONFIGS)
    try:
        policy = await cleanup_policy(settings, bootstrap, topic)
    except KafkaError as exc:  # e.g. no DescribeConfigs permission: the deploys still work
        log.warning("could not check the control topic's cleanup policy", topic=topic, error=str(exc))
        return
    if {p.strip() for p in policy.split(",")} != {"compact"}:  # "compact,delete" still drops old deploys
        # not altered here: AlterConfigs replaces every setting of the topic, not just this one
        log.error(
            "the control topic is not compacted: deploys older than its retention will be lost; "
            "set cleanup.policy=compact on it",
            topic=topic,
            cleanup_policy=policy,
        )
