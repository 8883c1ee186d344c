"""Five distinct pass-through connectors for the hop-overhead chain (each node type has its own topic).

Loaded through a topology's ``imports: [bench.passthrough_nodes]`` like any user's custom nodes.
"""

from __future__ import annotations

from typing import ClassVar

from worker.envelope import Message
from worker.node import Connector, NodeContext, Result


class _Passthrough(Connector):
    """Returns the body unchanged: all that is measured is the hop itself."""

    needs_install = False
    concurrency: ClassVar[int] = 100

    async def process(self, message: Message, ctx: NodeContext) -> Result:
        return Result(body=message.body)


class BenchHop1(_Passthrough):
    name = "bench-hop-1"


class BenchHop2(_Passthrough):
    name = "bench-hop-2"


class BenchHop3(_Passthrough):
    name = "bench-hop-3"


class BenchHop4(_Passthrough):
    name = "bench-hop-4"


class BenchHop5(_Passthrough):
    name = "bench-hop-5"


#: Node names of the chain, in order.
CHAIN = [cls.name for cls in (BenchHop1, BenchHop2, BenchHop3, BenchHop4, BenchHop5)]
