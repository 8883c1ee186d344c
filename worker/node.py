"""The node contract: what a connector or a batch is, and what it gets to work with.

A node never touches Kafka. It receives a :class:`~worker.envelope.Message` and a
:class:`NodeContext` (its install, the shared Shoptet client, the store) and returns a
:class:`Result`. That keeps every node testable with nothing but respx.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import structlog
from pydantic import BaseModel, ConfigDict

from worker.envelope import Message, ResultCode

if TYPE_CHECKING:
    from applications.base import Application
    from applications.client import ShoptetClient
    from worker.settings import Settings
    from worker.store import Install, InstallStore


class NodeKind(StrEnum):
    CONNECTOR = "connector"
    BATCH = "batch"


@dataclass(slots=True)
class Result:
    """What a node answers. ``body`` is a connector's output; batches emit items through ``emit``."""

    code: ResultCode = ResultCode.SUCCESS
    body: Any = None
    message: str = ""
    forward_to: tuple[str, ...] = ()
    cursor: dict[str, Any] | None = None


#: Waits until the broker has acknowledged every item a batch emitted so far. For a step that may
#: only follow delivered items: emitted items still on their way are lost if the worker dies then,
#: and the input is read again only if its file, page or job still exists (shoptet-parse-json-lines
#: moves the change feed's watermark after it).
Delivered = Callable[[], Awaitable[None]]


async def _nothing_on_its_way() -> None:
    """Outside the worker (node tests), ``emit`` hands items over at once: nothing to wait for."""


@dataclass(slots=True)
class NodeContext:
    """Everything a node may use. ``install``/``shoptet`` are None only for nodes without an install."""

    store: InstallStore
    settings: Settings
    install: Install | None = None
    application: Application | None = None
    shoptet: ShoptetClient | None = None
    node_id: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    #: Builds a client once a node found its install itself (shoptet-job-finished-webhook).
    client_factory: Callable[[Install], ShoptetClient] | None = None
    #: Webhook events the deployed topologies start on (for shoptet-subscribe-webhooks).
    webhook_events: frozenset[str] = frozenset()
    log: Any = field(default_factory=lambda: structlog.get_logger("node"))
    #: Returns once the broker has every item emitted so far (see :data:`Delivered`).
    delivered: Delivered = _nothing_on_its_way

    def require_install(self) -> Install:
        if self.install is None:
            from worker.errors import InstallNotFound

            raise InstallNotFound("this node needs an install (headers user + application)")
        return self.install

    def require_shoptet(self) -> ShoptetClient:
        if self.shoptet is None:
            from worker.errors import InstallNotFound

            raise InstallNotFound("this node needs an install to call Shoptet")
        return self.shoptet


#: How a batch hands out one item; awaiting it means the item is on its way to the broker.
Emit = Callable[[Any], Awaitable[None]]


class NoOptions(BaseModel):
    """The ``Options`` of a node that reads none: any key in the topology is a mistake."""

    model_config = ConfigDict(extra="forbid")


class Node(ABC):
    """Common attributes. Subclass :class:`Connector` or :class:`Batch`, not this."""

    #: Orchesty's node name; also names the Kafka topic and consumer group of this node type.
    name: ClassVar[str]
    kind: ClassVar[NodeKind]
    #: Application used when the topology does not name one (None: any, taken from headers).
    application: ClassVar[str | None] = None
    #: False for nodes that find their install themselves (shoptet-job-finished-webhook).
    needs_install: ClassVar[bool] = True
    #: Nodes that only read reference data may run for a disabled (suspended) install.
    accepts_disabled_install: ClassVar[bool] = False
    #: Writers process one message per key at a time so that updates keep their order.
    ordered: ClassVar[bool] = False
    #: Default number of messages this node processes at once (the topology may override).
    concurrency: ClassVar[int] = 10
    #: The topology ``options`` it reads (``ctx.options``), as a pydantic model that forbids other
    #: keys: a deploy checks them and names the line at fault. None (a custom node that declares
    #: none): not checked. Every built-in node declares one, :class:`NoOptions` when it reads none.
    Options: ClassVar[type[BaseModel] | None] = None


class Connector(Node):
    """One message in, one message out."""

    kind = NodeKind.CONNECTOR

    @abstractmethod
    async def process(self, message: Message, ctx: NodeContext) -> Result: ...


class Batch(Node):
    """One message in, one message per item out (through ``emit``), optionally a cursor to go on."""

    kind = NodeKind.BATCH

    @abstractmethod
    async def process(self, message: Message, ctx: NodeContext, emit: Emit) -> Result: ...
