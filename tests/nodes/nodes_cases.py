"""Orchesty-style fixture cases: an input message, the HTTP exchanges, the expected output and code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import respx
from nodes_fakes import Harness

from worker.envelope import ResultCode
from worker.errors import NodeError
from worker.node import Batch, Connector


@dataclass
class Exchange:
    """One request the node must send and the answer Shoptet gives."""

    method: str
    path: str
    status: int = 200
    response: Any = None
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None


@dataclass
class Case:
    id: str
    node: type[Connector] | type[Batch]
    input: Any
    exchanges: list[Exchange]
    output: Any = None
    emitted: list[Any] | None = None
    code: ResultCode = ResultCode.SUCCESS
    message: str | None = None
    raises: type[NodeError] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def param(self) -> Any:
        return pytest.param(self, id=self.id)


async def play(case: Case, harness: Harness, router: respx.MockRouter) -> None:
    """Run the case: mock its exchanges, run the node, compare requests, output and code."""
    routes = [
        router.request(x.method, x.path).mock(return_value=httpx.Response(x.status, json=x.response))
        for x in case.exchanges
    ]
    if case.raises is not None:
        with pytest.raises(case.raises):
            await harness.run(case.node(), case.input, options=case.options)
    else:
        run = await harness.run(case.node(), case.input, options=case.options)
        assert run.result.code == case.code
        if case.message is not None:
            assert run.result.message == case.message
        if case.emitted is not None:
            assert run.emitted == case.emitted
        else:
            assert run.result.body == case.output
    for exchange, route in zip(case.exchanges, routes, strict=True):
        assert route.call_count == 1, f"{exchange.method} {exchange.path} called {route.call_count} times"
        request = route.calls.last.request
        assert dict(request.url.params) == exchange.params
        if exchange.json is not None:
            import json

            assert json.loads(request.content) == exchange.json
