"""``POST /topologies/{name}/run`` on a real broker: the key guards it, the 202 means published."""

from __future__ import annotations

import httpx
import pytest

from worker.app import Worker
from worker.envelope import H

from .conftest import API_KEY
from .helpers import TopicWatch

pytestmark = pytest.mark.e2e

KEY = {"X-Api-Key": API_KEY}


async def test_run_starts_the_process_and_answers_its_ids(client: httpx.AsyncClient, watch: TopicWatch) -> None:
    response = await client.post("/topologies/wh-premium/run", json={"user": "shop-7", "body": {"n": 7}}, headers=KEY)

    assert response.status_code == 202, response.text
    ids = response.json()
    [(key, message)] = await watch.new("test-passthrough")
    assert key == b"shop-7"
    assert message.body == {"n": 7}
    assert ids == {"process-id": message.process_id, "correlation-id": message.correlation_id}
    assert message.headers[H.TOPOLOGY_NAME] == "wh-premium"
    assert message.headers[H.APPLICATION] == "shoptet-premium"


async def test_run_without_a_body_starts_with_an_empty_object(client: httpx.AsyncClient, watch: TopicWatch) -> None:
    response = await client.post("/topologies/wh-premium/run", json={"user": "shop-7"}, headers=KEY)

    assert response.status_code == 202, response.text
    [(_, message)] = await watch.new("test-passthrough")
    assert message.body == {}


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "wrong"}, {"X-Api-Key": API_KEY + "x"}])
async def test_missing_or_wrong_key_is_401(
    client: httpx.AsyncClient, watch: TopicWatch, headers: dict[str, str]
) -> None:
    response = await client.post("/topologies/wh-premium/run", json={"user": "shop-7"}, headers=headers)

    assert response.status_code == 401
    assert response.json() == {"status": "error", "message": "missing or invalid X-Api-Key"}  # as every error
    await watch.assert_nothing_new()


@pytest.mark.parametrize("content", [b'{"nope": 1}', b"{not json", b"[" * 100_000])
async def test_key_is_checked_before_the_body_is_read(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post("/topologies/wh-premium/run", content=content)

    assert response.status_code == 401


async def test_a_body_over_1_mib_is_413(client: httpx.AsyncClient, watch: TopicWatch) -> None:
    big = b'{"user": "shop-7", "body": "' + b"x" * (1 << 20) + b'"}'
    response = await client.post("/topologies/wh-premium/run", content=big, headers=KEY)

    assert response.status_code == 413
    await watch.assert_nothing_new()


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/topologies/wh-premium/run", content=b"{not json", headers=KEY)

    assert response.status_code == 422
    assert response.json()["status"] == "error"


async def test_no_key_configured_disables_the_endpoint(
    worker: Worker, client: httpx.AsyncClient, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker.rt, "settings", worker.rt.settings.model_copy(update={"api_key": None}))
    response = await client.post("/topologies/wh-premium/run", json={"user": "shop-7"}, headers=KEY)

    assert response.status_code == 403
    assert "API_KEY" in response.json()["message"]
    await watch.assert_nothing_new()


@pytest.mark.parametrize("name", ["no-such-topology", "wh-any"])  # wh-any has no manual start
async def test_unknown_or_not_runnable_topology_is_404(client: httpx.AsyncClient, name: str) -> None:
    response = await client.post(f"/topologies/{name}/run", json={"user": "shop-7"}, headers=KEY)

    assert response.status_code == 404


async def test_missing_user_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/topologies/wh-premium/run", json={"body": {}}, headers=KEY)

    assert response.status_code == 422
    assert "user" in response.json()["message"]


async def test_the_application_may_be_named_as_the_cli_names_it(client: httpx.AsyncClient, watch: TopicWatch) -> None:
    """`run --application premium` worked, and the same word over HTTP was a 422."""
    started = await client.post(
        "/topologies/wh-premium/run", json={"user": "shop-7", "application": "premium"}, headers=KEY
    )
    assert started.status_code == 202, started.text
    [(_, message)] = await watch.new("test-passthrough")
    assert message.headers[H.APPLICATION] == "shoptet-premium"

    other = await client.post(
        "/topologies/wh-premium/run", json={"user": "shop-7", "application": "addon"}, headers=KEY
    )
    assert other.status_code == 422 and "serves shoptet-premium, not shoptet" in other.json()["message"]


async def test_a_start_record_the_broker_refuses_for_a_while_does_not_hold_the_answer(
    worker: Worker, client: httpx.AsyncClient, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start message went out but its ledger record did not (its partition without a leader):
    the answer waited as long as that lasted, and a client that gave up and asked again started a
    second process. The process has started: 202, and the record is sent again in the background."""
    import asyncio

    from aiokafka.errors import NotLeaderForPartitionError

    send = worker.rt.send
    ledger_refused: list[str] = []
    ledger_back = asyncio.Event()

    async def ledger_without_leader(topic: str, message: object) -> asyncio.Future[object]:
        if topic == worker.rt.topics.processes and not ledger_back.is_set():
            ledger_refused.append(topic)
            refused: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            refused.set_exception(NotLeaderForPartitionError())
            return refused
        return await send(topic, message)  # type: ignore[arg-type]

    monkeypatch.setattr(worker.rt, "send", ledger_without_leader)
    response = await asyncio.wait_for(
        client.post("/topologies/wh-premium/run", json={"user": "shop-7"}, headers=KEY), 10
    )
    assert response.status_code == 202, response.text
    [(_, message)] = await watch.new("test-passthrough")
    assert message.process_id == response.json()["process-id"]
    assert ledger_refused
    ledger_back.set()
    await asyncio.wait_for(asyncio.gather(*worker.rt.finishing), 30)  # the start record went out after all


async def test_a_first_message_the_broker_refuses_for_a_while_is_answered_pending_and_still_sent(
    worker: Worker, client: httpx.AsyncClient, watch: TopicWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start record went out but the message did not (its partition without a leader): the
    message was sent again inline for as long as that lasted, with no answer; the client gave up,
    asked again, and both processes started once the broker was back."""
    import asyncio

    from aiokafka.errors import NotLeaderForPartitionError

    from worker import starter

    monkeypatch.setattr(starter, "START_ANSWER_SECONDS", 0.5)
    send = worker.rt.send
    node_topic = worker.rt.topics.node("test-passthrough")
    node_back = asyncio.Event()

    async def node_without_leader(topic: str, message: object) -> asyncio.Future[object]:
        if topic == node_topic and not node_back.is_set():
            refused: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            refused.set_exception(NotLeaderForPartitionError())
            return refused
        return await send(topic, message)  # type: ignore[arg-type]

    monkeypatch.setattr(worker.rt, "send", node_without_leader)
    response = await asyncio.wait_for(
        client.post("/topologies/wh-premium/run", json={"user": "shop-7"}, headers=KEY), 10
    )
    assert response.status_code == 202, response.text  # not 503: clients retry those by themselves
    answer = response.json()
    assert answer["status"] == "pending" and "may still start" in answer["message"]
    node_back.set()
    await asyncio.wait_for(asyncio.gather(*worker.rt.finishing), 30)
    [(_, message)] = await watch.new("test-passthrough")
    assert message.process_id == answer["process-id"]  # the process the answer named started


async def test_a_body_whose_first_message_is_over_the_brokers_limit_is_413(
    client: httpx.AsyncClient, watch: TopicWatch
) -> None:
    """Under the request limit, over the broker's once the headers are on: answered "retry later",
    which failed the same way every time."""
    body = b'{"user": "shop-7", "body": "' + b"x" * ((1 << 20) - 200) + b'"}'
    assert len(body) < 1 << 20
    response = await client.post("/topologies/wh-premium/run", content=body, headers=KEY)

    assert response.status_code == 413, response.text
    assert "the broker takes" in response.json()["message"]
    await watch.assert_nothing_new()
