"""Starting a process: stamp the headers and publish the body to the start node's topic.

Every way a process starts (cron tick, Shoptet webhook, inbound topic, operator's ``run``) goes
through :func:`start_process`, so all of them produce the same headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, Protocol

import structlog
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from worker.catalog import TopologyCatalog
from worker.consumer import RecordAbandoned
from worker.envelope import Message
from worker.errors import OutputTooLarge
from worker.kafka import MAX_RECORD_BYTES, Send, resend_until_acknowledged, send_all, unacknowledged
from worker.processes import start_record
from worker.router import start_headers
from worker.store import Install
from worker.tasks import backoff_delays
from worker.topics import TopicNames
from worker.topology import APPLICATIONS, StartSpec, TopologyError, TopologyVersion, parse_topology

log = structlog.get_logger("starter")


class Starter(Protocol):
    """What starting a process needs: the worker's Runtime or a CLI's ControlClient."""

    topics: TopicNames
    catalog: TopologyCatalog
    metrics: Any

    async def send(self, topic: str, message: Message) -> asyncio.Future[Any]: ...


class TopologyNotRunnable(LookupError):
    """No active (deployed and enabled) topology of that name, or it has no such start."""


#: Finds an install by user and application (``InstallStore.get_install``, the runtime's cache).
InstallLookup = Callable[[str, str], Awaitable[Install | None]]


class InstallMissing(LookupError):
    """A manual run for a user with no (enabled) install of the application its start node needs."""


class ApplicationNeeded(ValueError):
    """A manual run whose install cannot be told: the topology names no application (or another)."""


def find_start(tv: TopologyVersion, kind: str, value: str | None = None) -> StartSpec | None:
    for start in tv.topology.start:
        if kind == "manual" and start.manual:
            return start
        if kind == "cron" and start.cron and (value is None or start.cron == value):
            return start
        if kind == "webhook" and start.webhook and value in start.webhook:
            return start
        if kind == "topic" and start.topic and start.topic == value:
            return start
        if kind == "installed" and start.installed:
            return start
    return None


#: Runs a coroutine to its end in the background, named for a stop's log (``Runtime.finish_later``).
FinishLater = Callable[[Coroutine[Any, Any, None], str], None]

#: How long a request waits for a start message the broker did not take at first (its start
#: record it did take) before it answers; the message is sent again in the background meanwhile.
START_ANSWER_SECONDS = 10.0


class StartNotAcknowledged(Exception):
    """The start record is in the ledger, the first message not yet: it is being sent again, and the
    process may still start. Asked again, the caller would start a second one."""

    def __init__(self, message: Message) -> None:
        self.message = message
        super().__init__(
            f"the broker has not acknowledged the first message of process {message.process_id} yet; it is "
            "being sent again and the process may still start: check `shoptet-worker status` before retrying"
        )


async def start_process(
    rt: Starter,
    tv: TopologyVersion,
    start: StartSpec,
    *,
    user: str | None,
    body: Any,
    application: str | None = None,
    finish_later: FinishLater | None = None,
) -> Message:
    """Publish the first message of a new process and its start record in the ledger; return when
    the broker has both.

    Both or neither: once the broker took one, the other is sent again until it takes it too. A
    message without its start record did its work but was never announced finished, a start record
    without its message stayed in flight for ever, and the caller's retry (a redelivered inbound
    record) started a second process besides. The message is queued first: one the producer
    refuses outright (too large) then leaves nothing behind.

    With ``finish_later`` (an HTTP request's), a start record sent again goes on in the background
    once the broker took the message: the process has started. Awaited, an answer waited as long as
    the broker refused the record, and a client that gave up and asked again started a second
    process. A message the broker refused while it took the record is sent again here for
    ``START_ANSWER_SECONDS``, then in the background, and :class:`StartNotAcknowledged` says so.
    """
    node_id = tv.topology.start_node(start)
    message = Message(body=body, headers=start_headers(tv, node_id, user=user, application=application))
    spec = tv.topology.nodes[node_id]
    record = start_record(message)
    send = _sender(rt)
    first = (rt.topics.node(spec.node or ""), message)
    pending = [(first, await send(first))]
    pending += await send_all([(rt.topics.processes, Message(body=record).with_key(record["root"]))], send)
    failed = await unacknowledged(pending)
    if len(failed) == len(pending):  # the broker has neither: nothing started, the caller may try again
        for _, ack in pending:
            ack.result()  # raises the broker's error
    if rt.metrics is not None:
        rt.metrics.process_started(tv.name)
    if failed and first not in failed and finish_later is not None:
        # the process has started (its message is with the broker): only its start record is late
        resend = resend_until_acknowledged(failed, send, what="process start record")
        finish_later(resend, f"start record of process {message.process_id} ({tv.name})")
    elif failed and finish_later is not None:
        # its start record is in: the message goes on being sent, but the answer must not wait as long
        # as the broker refuses it (the client gives up, asks again, and both start)
        resend = resend_until_acknowledged(failed, send, what="process start")
        await _resend_within(
            resend, message, finish_later, f"first message of process {message.process_id} ({tv.name})"
        )
    else:
        await resend_until_acknowledged(failed, send, what="process start")
    return message


async def _resend_within(
    resend: Coroutine[Any, Any, None], message: Message, finish_later: FinishLater, what: str
) -> None:
    task = asyncio.ensure_future(resend)
    try:
        done, _ = await asyncio.wait({task}, timeout=START_ANSWER_SECONDS)
    except asyncio.CancelledError:  # the request is gone: the message still goes
        finish_later(_until_done(task), what)
        raise
    if not done:
        finish_later(_until_done(task), what)
        raise StartNotAcknowledged(message)
    task.result()


async def _until_done(task: asyncio.Future[None]) -> None:
    await asyncio.wait({task})


async def start_inbound(
    rt: Starter,
    topic: str,
    *,
    user: str,
    body: Any,
    application: str | None = None,
    still_ours: Callable[[], bool] | None = None,
) -> tuple[int, int]:
    """Start every active topology that starts on inbound ``topic``; of those, a record naming its
    ``application`` starts only the ones that serve it. How many listen, and how many started.

    ``still_ours``: whether the record is still this consumer's (no rebalance, no stop since); a
    start tried again once another has started gives the record up (:class:`RecordAbandoned`)
    when it is not, for its partition's next owner."""
    active = rt.catalog.active_all()
    listening = [(tv, start) for tv in active if (start := find_start(tv, "topic", topic)) is not None]
    # another application's install: the premium topology looked for it in vain
    serving = [(tv, start) for tv, start in listening if application is None or tv.topology.serves(application)]
    check_start_sizes(serving, user=user, body=body, application=application)
    for n, (tv, start) in enumerate(serving):
        starting = partial(start_process, rt, tv, start, user=user, body=body, application=application)
        if n == 0:
            await starting()  # nothing started yet: a failure leaves the record to be tried again
        else:
            await _until_started(starting, tv.name, still_ours)
    return len(listening), len(serving)


#: Backoff of a topology's start tried again once another topology of the same record has started.
START_RETRY_FIRST_SECONDS = 0.5
START_RETRY_MAX_SECONDS = 10.0


async def _until_started(
    starting: Callable[[], Awaitable[Message]], name: str, still_ours: Callable[[], bool] | None
) -> None:
    """Start until the broker takes it: once an earlier topology of the record has started, a failure
    handed back to the consumer tried the whole record again, and that one started a second time.
    A record no longer ours is given up: its next owner starts it all again (at-least-once)."""
    for delay in backoff_delays(START_RETRY_FIRST_SECONDS, START_RETRY_MAX_SECONDS):
        try:
            await starting()
            return
        except Exception as exc:  # the broker's (a refusal of the record itself was checked first)
            log.warning("inbound start failed; trying again", topology=name, error=str(exc) or type(exc).__name__)
        await asyncio.sleep(delay)
        if still_ours is not None and not still_ours():
            raise RecordAbandoned


def check_start_sizes(
    starts: list[tuple[TopologyVersion, StartSpec]], *, user: str | None, body: Any, application: str | None
) -> None:
    """Raise :class:`OutputTooLarge` when the producer would refuse the start message of any of
    ``starts``, so that the caller puts its record in trash: retried, it was refused every time.

    All are checked before any starts: their headers differ in size (the topology's name), and a
    record that fits one of them and not another would start the first, then its replay from trash
    would start it a second time. Measured as the producer measures (``max_request_size``)."""
    value: bytes | None = None
    for tv, start in starts:
        message = Message(
            body=body, headers=start_headers(tv, tv.topology.start_node(start), user=user, application=application)
        )
        value = message.encode_body() if value is None else value  # once: every topology's body is the same
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(message.key(), value, message.kafka_headers())
        if size > MAX_RECORD_BYTES:
            raise OutputTooLarge(
                f"the start message of topology {tv.name!r} would be {size} bytes; the broker takes {MAX_RECORD_BYTES}"
            )


async def run_manual(
    rt: Starter,
    name: str,
    *,
    user: str | None,
    body: Any,
    application: str | None = None,
    strict: bool = False,
    installs: InstallLookup | None = None,
    finish_later: FinishLater | None = None,
) -> Message:
    """Start a process by hand. ``application`` says whose install ``user`` is, for a topology
    that names none (it serves both); refused when the start node needs an install and nothing
    names its application: the message went to trash, and no replay could fix its headers.
    ``finish_later``: see :func:`start_process`.

    With ``installs``, also refused when the start node needs an install that is not there (or is
    disabled): a mistyped ``--user`` printed a process id, and the message went to trash.
    """
    tv = rt.catalog.active(name)
    unloadable = name in rt.catalog.unloadable()
    # ``strict`` (the CLI): a shell without the deployed version's modules would start the version
    # before it; a worker keeps running that one by design (a rolling upgrade), so its runs do too
    if unloadable and (strict or tv is None):
        raise TopologyNotRunnable(cannot_load_here(name))
    if tv is None:
        raise TopologyNotRunnable(f"topology {name!r} is not deployed or is disabled")
    start = find_start(tv, "manual")
    if start is None:
        raise TopologyNotRunnable(f"topology {name!r} has no manual start")
    if application is not None and application not in APPLICATIONS:
        raise ApplicationNeeded(f"unknown application {application!r} (known: {', '.join(sorted(APPLICATIONS))})")
    if application is not None and not tv.topology.serves(application):
        raise ApplicationNeeded(f"topology {name!r} serves {tv.topology.application}, not {application}")
    if application is None:
        for node_id, spec in tv.topology.nodes.items():  # any node of it: the message gets there
            node = rt.catalog.registry.get(spec.node or "")
            if node is None or not node.needs_install:
                continue
            if tv.topology.application_of(node_id, node.application) is None:
                raise ApplicationNeeded(
                    f"topology {name!r} names no application and its node {node_id!r} needs an install: "
                    "say whose (shoptet-premium or shoptet): `run --application`, or `application` in the HTTP request"
                )
    if installs is not None:
        await _check_install(rt, tv, start, user, application, installs)
    # refused here with the reason: a request under the HTTP limit whose headers took it over the
    # broker's was answered "retry later", and failed the same way every time
    check_start_sizes([(tv, start)], user=user, body=body, application=application)
    return await start_process(rt, tv, start, user=user, body=body, application=application, finish_later=finish_later)


def cannot_load_here(name: str) -> str:
    return (
        f"topology {name!r} is deployed, but its version cannot be loaded here: are the modules it imports "
        "importable from this shell (PYTHONPATH)?"
    )


async def _check_install(
    rt: Starter,
    tv: TopologyVersion,
    start: StartSpec,
    user: str | None,
    application: str | None,
    installs: InstallLookup,
) -> None:
    node_id = tv.topology.start_node(start)
    node = rt.catalog.registry.get(tv.topology.nodes[node_id].node or "")
    if node is None or not node.needs_install:
        return
    whose = application or tv.topology.application_of(node_id, node.application)
    if whose is None:
        return  # any application: the node takes it from the message (none here: it says so)
    install = await installs(user, whose) if user else None
    if install is None:
        raise InstallMissing(f"no {whose} install for user {user!r} (`shoptet-worker install list` shows them)")
    if not install.enabled and not node.accepts_disabled_install:
        raise InstallMissing(f"the {whose} install of user {user!r} is disabled")


def installed_starts(rt: Starter, install: Install) -> list[tuple[TopologyVersion, StartSpec]]:
    """The active topologies of the install's application that start when one is added."""
    found = []
    for tv in rt.catalog.active_all():
        start = find_start(tv, "installed")
        # the loader makes a topology with an `installed` start name its application
        if start is not None and tv.topology.serves(install.application):
            found.append((tv, start))
    return found


def unread_installed_starts(rt: Starter, install: Install) -> list[str]:
    """Deployed topologies of the install's application with an ``installed`` start whose deployed
    version this process cannot read, and of which it runs no earlier version either: their start
    does not run from here (``install add`` from a shell without their modules says so).

    Their YAML is read without a registry, which needs none of the modules they import."""
    running = {tv.name for tv, _ in installed_starts(rt, install)}
    unread = []
    for name in rt.catalog.unloadable():
        deployed = rt.catalog.deployed_source(name)
        if name in running or deployed is None:
            continue
        try:
            tv = parse_topology(deployed[1], name, deployed=True)
        except TopologyError:
            continue
        if find_start(tv, "installed") is not None and tv.topology.serves(install.application):
            unread.append(name)
    return unread


def installed_body(install: Install) -> dict[str, Any]:
    """An ``installed`` start's body: it names the e-shop (the shipped ``webhooks-subscribe`` ignores it)."""
    return {"eshopId": install.eshop_id}


async def start_installed(rt: Starter, install: Install) -> list[Message]:
    """Start every active topology of the install's application that starts when one is added.

    Called once the install is stored (``install add``; the addon's install callback retries each
    start on its own).
    """
    return [
        await start_process(
            rt, tv, start, user=install.user, body=installed_body(install), application=install.application
        )
        for tv, start in installed_starts(rt, install)
    ]


def _sender(rt: Starter) -> Send[tuple[str, Message]]:
    async def send(item: tuple[str, Message]) -> asyncio.Future[Any]:
        return await rt.send(*item)

    return send
