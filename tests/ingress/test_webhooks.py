"""The webhook endpoint on a real broker: what is published, and what never is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.support import acknowledged_late
from worker.app import Worker
from worker.envelope import H
from worker.http.app import create_http_app
from worker.ingress import IngressWorker
from worker.store import Install
from worker.webhook_keys import CURRENT_KEY, PREVIOUS_KEY, ROTATED_AT, SIGNATURE_HEADER, sign

from .conftest import SIGNATURE_KEY, add_premium_install
from .helpers import TopicWatch, signed, webhook_body

pytestmark = pytest.mark.e2e

URL = "/webhooks/shoptet/shoptet-premium"


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def _rejections(logs: Sequence[Mapping[str, Any]], event: str = "webhook rejected") -> list[str]:
    return [entry["reason"] for entry in logs if entry["event"] == event]


async def test_verified_webhook_starts_every_listening_topology_once(
    worker: Worker, client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    body = webhook_body(eshop_id)
    response = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    [(key, message)] = await watch.new("test-passthrough")  # wh-premium
    assert key == install.user.encode()
    assert message.body == {
        "eshopId": eshop_id,
        "event": "order:create",
        "eventCreated": "2024-05-02T10:15:30+0200",
        "eventInstance": "2024000123",
    }
    assert message.headers[H.USER] == install.user
    assert message.headers[H.APPLICATION] == "shoptet-premium"
    assert message.headers[H.TOPOLOGY_NAME] == "wh-premium"
    assert message.headers[H.NODE_ID] == "first"
    active = worker.rt.catalog.active("wh-premium")
    assert active is not None and message.headers[H.TOPOLOGY_VERSION] == active.version
    [(key_any, any_app)] = await watch.new("test-flaky-once")  # wh-any: a topology of no application
    assert key_any == install.user.encode()
    assert any_app.headers[H.TOPOLOGY_NAME] == "wh-any"
    assert any_app.headers[H.APPLICATION] == "shoptet-premium"
    assert await watch.new("test-explode") == []  # wh-addon belongs to the other application
    assert sorted(response.json()["processIds"]) == sorted([message.process_id, any_app.process_id])


async def test_same_delivery_twice_is_published_once(
    client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    body = webhook_body(eshop_id)
    first = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
    again = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))

    assert (first.status_code, first.json()["status"]) == (200, "accepted")
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert len(await watch.new("test-passthrough")) == 1
    # another instance of the same event is another notification
    other = webhook_body(eshop_id, instance="2024000124")
    assert (await client.post(URL, content=other, headers=signed(other, SIGNATURE_KEY))).json()["status"] == "accepted"
    assert len(await watch.new("test-passthrough")) == 2


@pytest.mark.parametrize("where", ["body", "signature"])
async def test_one_flipped_byte_is_401_and_nothing_reaches_kafka(
    client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch, where: str
) -> None:
    body = webhook_body(eshop_id)
    signature = sign(SIGNATURE_KEY, body)
    if where == "body":
        body = _flip(body, body.index(b"2024000123") + 9)  # "...123" -> "...122": valid JSON, same e-shop
    else:
        signature = _flip(signature.encode(), 7).decode()
    with capture_logs() as logs:
        response = await client.post(URL, content=body, headers={SIGNATURE_HEADER: signature})

    assert response.status_code == 401
    await watch.assert_nothing_new()
    assert _rejections(logs) == ["signature mismatch"]
    assert SIGNATURE_KEY not in repr(logs) and signature not in repr(logs)


async def test_missing_signature_is_401(
    client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    body = webhook_body(eshop_id)
    with capture_logs() as logs:
        response = await client.post(URL, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 401
    assert _rejections(logs) == ["signature missing"]
    await watch.assert_nothing_new()


async def test_install_without_a_key_is_401_and_says_the_key_is_missing(
    worker: Worker, client: httpx.AsyncClient, eshop_id: int, watch: TopicWatch
) -> None:
    keyless = Install(user=f"shop-{eshop_id}", application="shoptet-premium", eshop_id=str(eshop_id))
    await worker.rt.store.add_install(keyless)
    body = webhook_body(eshop_id)
    with capture_logs() as logs:
        response = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))

    assert response.status_code == 401
    assert _rejections(logs) == ["signature key missing for the install"]
    await watch.assert_nothing_new()


async def test_unknown_eshop_is_acknowledged_and_not_published(
    client: httpx.AsyncClient, install: Install, watch: TopicWatch
) -> None:
    body = webhook_body(999_999)
    with capture_logs() as logs:
        response = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))

    assert (response.status_code, response.json()["status"]) == (200, "ignored")
    assert _rejections(logs, "webhook ignored") == ["unknown e-shop"]
    await watch.assert_nothing_new()


async def test_a_delivery_without_event_created_is_accepted_and_never_taken_for_a_duplicate(
    client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    """Shoptet's ``eventCreated`` may be null: refused with 400, every retry of it was lost. Without
    it the next change of the same order has the same body, so neither is dropped as a duplicate."""
    payload = {"eshopId": eshop_id, "event": "order:create", "eventCreated": None, "eventInstance": "9"}
    body = json.dumps(payload).encode()
    first = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
    again = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))

    assert (first.status_code, first.json()["status"]) == (200, "accepted"), first.text
    assert (again.status_code, again.json()["status"]) == (200, "accepted"), again.text
    assert [m.body["eventCreated"] for _, m in await watch.new("test-passthrough")] == [None, None]


async def test_eshop_installed_for_another_application_is_unknown(
    client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    body = webhook_body(eshop_id)
    response = await client.post("/webhooks/shoptet/shoptet", content=body, headers=signed(body, SIGNATURE_KEY))

    assert (response.status_code, response.json()["status"]) == (200, "ignored")
    await watch.assert_nothing_new()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"eshopId": 1, "event": "order:create", "eventCreated": "2024-05-02T10:15:30+0200"}', "eventInstance"),
        (b'{"eshopId": 1, "eventCreated": "x", "eventInstance": "1"}', "event"),
        (b'{"eshopId": null, "event": "order:create", "eventCreated": "x", "eventInstance": "1"}', "eshopId"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
    ],
)
async def test_malformed_body_is_400(client: httpx.AsyncClient, watch: TopicWatch, body: bytes, reason: str) -> None:
    with capture_logs() as logs:
        response = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))

    assert response.status_code == 400
    [logged] = _rejections(logs)
    assert reason in logged
    await watch.assert_nothing_new()


async def test_body_over_the_limit_is_413(
    worker: Worker, client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    limit = worker.rt.settings.webhook_max_body_bytes
    body = b'{"eshopId": %d, "pad": "' % eshop_id + b"x" * limit + b'"}'
    with capture_logs() as logs:
        response = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))

    assert response.status_code == 413
    assert _rejections(logs) == ["body too large"]
    await watch.assert_nothing_new()


async def test_streamed_body_over_the_limit_is_413(worker: Worker, client: httpx.AsyncClient) -> None:
    """No Content-Length (chunked): the limit holds while reading, nothing is buffered past it."""
    limit = worker.rt.settings.webhook_max_body_bytes

    async def chunks() -> Any:
        for _ in range(limit // 65_536 + 2):
            yield b"x" * 65_536

    response = await client.post(URL, content=chunks(), headers={SIGNATURE_HEADER: "00"})

    assert response.status_code == 413


async def test_unknown_application_is_404(client: httpx.AsyncClient, eshop_id: int) -> None:
    body = webhook_body(eshop_id)
    response = await client.post("/webhooks/shoptet/nope", content=body, headers=signed(body, SIGNATURE_KEY))

    assert response.status_code == 404


async def test_previous_key_is_accepted_only_during_the_grace_period(
    worker: Worker, client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    store, grace = worker.rt.store, worker.rt.settings.signature_key_grace_seconds
    user, app = install.user, install.application
    await store.set_secret(user, app, PREVIOUS_KEY, "old-key")
    await store.set_secret(user, app, CURRENT_KEY, "new-key")
    await store.set_setting(user, app, ROTATED_AT, (datetime.now(UTC) - timedelta(seconds=grace / 2)).isoformat())
    within = webhook_body(eshop_id, instance="1")
    assert (await client.post(URL, content=within, headers=signed(within, "old-key"))).status_code == 200

    await store.set_setting(user, app, ROTATED_AT, (datetime.now(UTC) - timedelta(seconds=grace + 60)).isoformat())
    after = webhook_body(eshop_id, instance="2")
    assert (await client.post(URL, content=after, headers=signed(after, "old-key"))).status_code == 401
    assert (await client.post(URL, content=after, headers=signed(after, "new-key"))).status_code == 200
    assert [m.body["eventInstance"] for _, m in await watch.new("test-passthrough")] == ["1", "2"]


async def _shoptets_retry_is_accepted(client: httpx.AsyncClient, body: bytes, watch: TopicWatch) -> None:
    """After a failed hand-over, Shoptet's retry of the same delivery starts its process once."""
    retried = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
    assert (retried.status_code, retried.json()["status"]) == (200, "accepted")
    assert len(await watch.new("test-passthrough")) == 1


async def test_broker_failure_is_503_and_the_retry_is_not_taken_for_a_duplicate(
    worker: Worker,
    client: httpx.AsyncClient,
    install: Install,
    eshop_id: int,
    watch: TopicWatch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broker_down(topic: str, message: object) -> object:
        raise ConnectionError("broker unreachable")

    body = webhook_body(eshop_id)
    with monkeypatch.context() as patched, capture_logs() as logs:
        patched.setattr(worker.rt, "send", broker_down)
        failed = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
    assert failed.status_code == 503
    assert _rejections(logs, "webhook failed") == ["ConnectionError: broker unreachable"]
    await watch.assert_nothing_new()

    await _shoptets_retry_is_accepted(client, body, watch)


async def test_a_retry_after_some_starts_failed_starts_only_the_missing_ones(
    worker: Worker,
    client: httpx.AsyncClient,
    install: Install,
    eshop_id: int,
    watch: TopicWatch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two topologies listen; the broker refused one's start. Shoptet's retry started both again,
    and the one that had gone through ran twice."""
    flaky_topic = worker.rt.topics.node("test-flaky-once")  # wh-any's start node; wh-premium's is test-passthrough
    send = worker.rt.send

    async def refuse_one(topic: str, message: Any) -> Any:
        if topic == flaky_topic:
            raise ConnectionError("broker refused this topic")
        return await send(topic, message)

    body = webhook_body(eshop_id)
    with monkeypatch.context() as patched:
        patched.setattr(worker.rt, "send", refuse_one)
        failed = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
    assert failed.status_code == 503
    retried = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))

    assert (retried.status_code, retried.json()["status"]) == (200, "accepted"), retried.text
    assert len(await watch.new("test-passthrough")) == 1  # started by the first attempt only
    [(_, started)] = await watch.new("test-flaky-once")  # started by the retry
    assert retried.json()["processIds"] == [started.process_id]


async def test_a_webhook_cancelled_before_the_broker_had_it_is_not_taken_for_a_duplicate(
    worker: Worker,
    client: httpx.AsyncClient,
    install: Install,
    eshop_id: int,
    watch: TopicWatch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def cancelled(topic: str, message: object) -> object:
        raise asyncio.CancelledError  # shutdown or a dropped connection, mid-publish

    body = webhook_body(eshop_id)
    with monkeypatch.context() as patched, pytest.raises(asyncio.CancelledError):
        patched.setattr(worker.rt, "send", cancelled)
        await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
    await watch.assert_nothing_new()

    await _shoptets_retry_is_accepted(client, body, watch)


async def test_a_start_the_broker_acknowledges_after_the_answer_is_started_once(
    worker: Worker,
    client: httpx.AsyncClient,
    install: Install,
    eshop_id: int,
    watch: TopicWatch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given up after the publish timeout, the start was still in the producer's batch and went out
    all the same, while the lease was let go: Shoptet's retry started the process a second time."""
    late = worker.rt.settings.webhook_publish_timeout_seconds + 1
    body = webhook_body(eshop_id)
    with monkeypatch.context() as patched:
        patched.setattr(worker.rt, "send", acknowledged_late(worker.rt.send, late))
        first = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
        assert (first.status_code, first.json()["status"]) == (503, "in-flight")
        meanwhile = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
        assert (meanwhile.status_code, meanwhile.json()["status"]) == (503, "in-flight")
        await asyncio.sleep(late)  # the broker answers; the hand-over completes in the background
    retried = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
    assert (retried.status_code, retried.json()["status"]) == (200, "duplicate")
    assert len(await watch.new("test-passthrough")) == 1


@pytest.mark.parametrize("first_fails", [True, False])
async def test_a_delivery_repeated_while_the_first_is_handed_over_is_deferred_not_acknowledged(
    worker: Worker,
    client: httpx.AsyncClient,
    install: Install,
    eshop_id: int,
    watch: TopicWatch,
    monkeypatch: pytest.MonkeyPatch,
    first_fails: bool,
) -> None:
    """Shoptet (or a proxy) may give up on a slow first delivery and send it again. A 200 to the
    repeat while the first is still with the broker loses the event if the first then fails."""
    release, handing_over = asyncio.Event(), asyncio.Event()
    send = worker.rt.send

    async def slow_broker(topic: str, message: Any) -> Any:
        handing_over.set()
        await release.wait()
        if first_fails:
            raise ConnectionError("broker unreachable")
        return await send(topic, message)

    body = webhook_body(eshop_id)
    with monkeypatch.context() as patched:
        patched.setattr(worker.rt, "send", slow_broker)
        first = asyncio.create_task(client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY)))
        await asyncio.wait_for(handing_over.wait(), 10)
        repeated = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
        assert (repeated.status_code, repeated.json()["status"]) == (503, "in-flight")
        release.set()
        answered = await first
    if first_fails:
        assert answered.status_code == 503
        await watch.assert_nothing_new()
        await _shoptets_retry_is_accepted(client, body, watch)
    else:
        assert (answered.status_code, answered.json()["status"]) == (200, "accepted")
        again = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
        assert (again.status_code, again.json()["status"]) == (200, "duplicate")
        assert len(await watch.new("test-passthrough")) == 1


async def test_disabled_install_is_acknowledged_but_not_started(
    worker: Worker, client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    await worker.rt.store.set_enabled(install.user, install.application, False)
    body = webhook_body(eshop_id)
    response = await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))

    assert (response.status_code, response.json()["status"]) == (200, "ignored")
    await watch.assert_nothing_new()


async def test_an_eshop_installed_under_two_users_is_verified_against_the_install_that_signed(
    worker: Worker, client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    """The same token added again as another user renewed the e-shop's key for that user only; the
    first install (first by user) was the only one checked, and every webhook got 401."""
    second_key = "0f" * 16
    second = await add_premium_install(worker, eshop_id, f"{install.user}-second", second_key)
    body = webhook_body(eshop_id)

    response = await client.post(URL, content=body, headers=signed(body, second_key))
    assert (response.status_code, response.json()["status"]) == (200, "accepted"), response.text
    [(key, _)] = await watch.new("test-passthrough")
    assert key == second.user.encode()

    # both with the key, the first one disabled: the e-shop's webhooks go on for the enabled one
    await worker.rt.store.set_secret(install.user, install.application, CURRENT_KEY, second_key)
    await worker.rt.store.set_enabled(install.user, install.application, False)
    again = webhook_body(eshop_id, instance="2024000124")
    response = await client.post(URL, content=again, headers=signed(again, second_key))
    assert (response.status_code, response.json()["status"]) == (200, "accepted"), response.text
    [_, (key, _)] = await watch.new("test-passthrough")  # everything since the test began
    assert key == second.user.encode()


async def test_a_webhook_signed_with_a_disabled_installs_key_starts_for_the_enabled_install(
    worker: Worker, client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    """The second install renewed the e-shop's key (for itself only, then) and was disabled: the
    delivery, verified by its key, was dropped as "install disabled" although the e-shop's first
    install was enabled."""
    second_key = "1e" * 16
    second = await add_premium_install(worker, eshop_id, f"{install.user}-renewed", second_key)
    await worker.rt.store.set_enabled(second.user, second.application, False)
    body = webhook_body(eshop_id)

    response = await client.post(URL, content=body, headers=signed(body, second_key))

    assert (response.status_code, response.json()["status"]) == (200, "accepted"), response.text
    [(key, _)] = await watch.new("test-passthrough")
    assert key == install.user.encode()


async def test_addon_lifecycle_events_update_the_install(
    worker: Worker, client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    store = worker.rt.store

    async def deliver(event: str) -> httpx.Response:
        body = webhook_body(eshop_id, event=event, instance=str(eshop_id), created=datetime.now(UTC).isoformat())
        return await client.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))

    async def enabled() -> bool | None:
        found = await store.get_install(install.user, install.application)
        return None if found is None else found.enabled

    assert (await deliver("addon:suspend")).status_code == 200
    assert await enabled() is False
    assert (await deliver("addon:approve")).status_code == 200
    assert await enabled() is True
    assert await watch.new("test-passthrough") == []  # no topology listens to those two

    assert (await deliver("addon:uninstall")).status_code == 200
    assert await enabled() is None
    [(key, message)] = await watch.new("test-passthrough")  # wh-premium listens to uninstall
    assert key == install.user.encode() and message.body["event"] == "addon:uninstall"


async def test_a_late_addon_event_from_before_the_current_install_is_ignored(
    worker: Worker, client: httpx.AsyncClient, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    """An uninstall answered 503 (broker down) and retried by Shoptet after the e-shop installed the
    addon again must not remove, nor start anything for, the new install."""
    store = worker.rt.store
    before = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    await store.add_install(install)  # installed again, just now
    for event in ("addon:uninstall", "addon:suspend"):
        late = webhook_body(eshop_id, event=event, instance=str(eshop_id), created=before)
        response = await client.post(URL, content=late, headers=signed(late, SIGNATURE_KEY))
        assert (response.status_code, response.json()["status"]) == (200, "ignored")
    found = await store.get_install(install.user, install.application)
    assert found is not None and found.enabled
    await watch.assert_nothing_new()


async def test_standalone_ingress_follows_the_deployed_topologies(
    worker: Worker, install: Install, eshop_id: int, watch: TopicWatch
) -> None:
    """``shoptet-worker ingress``: no consumers, the workers' catalog, the same answers."""
    ingress = IngressWorker(worker.settings, node_names=[])
    await ingress.start()
    try:
        assert ingress.consumers == [] and ingress.rt.catalog.active("wh-premium") is not None
        transport = httpx.ASGITransport(app=create_http_app(ingress))
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress.test") as http:
            assert (await http.get("/readyz")).status_code == 200
            body = webhook_body(eshop_id)
            response = await http.post(URL, content=body, headers=signed(body, SIGNATURE_KEY))
    finally:
        await ingress.stop()

    assert (response.status_code, response.json()["status"]) == (200, "accepted")
    [(key, _)] = await watch.new("test-passthrough")
    assert key == install.user.encode()


def test_a_mass_events_codes_name_its_lease_by_their_hash() -> None:
    """``order:massUpdate`` carries its codes as a JSON list in ``eventInstance``: whole, the lease
    name outgrew its column (512 characters) and PostgreSQL refused every delivery."""
    from worker.http.webhooks import WebhookPayload

    def key(codes: list[str]) -> str:
        payload = WebhookPayload.model_validate(
            {
                "eshopId": 1,
                "event": "order:massUpdate",
                "eventCreated": "2026-11-25T03:00:00+0100",
                "eventInstance": json.dumps(codes),
            }
        )
        return payload.dedup_key("shoptet-premium")

    codes = [f"2026{n:06d}" for n in range(200)]
    assert len(key(codes)) < 200
    assert key(codes) == key(list(codes))
    assert key(codes) != key(codes[:-1])
    single = WebhookPayload.model_validate(
        {
            "eshopId": 1,
            "event": "order:create",
            "eventCreated": "2026-11-25T03:00:00+0100",
            "eventInstance": "2026000001",
        }
    )
    assert single.dedup_key("shoptet-premium").endswith(":2026000001:2026-11-25T03:00:00+0100")
