"""Per-message metrics are counted in plain Python and exposed in Prometheus' format when scraped."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from worker.metrics import Metrics, endpoint_label


def scraped(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_messages_are_counted_per_node_and_outcome_with_a_cumulative_histogram() -> None:
    metrics = Metrics()
    for seconds in (0.003, 0.005, 0.2):
        metrics.observe_message("shoptet-get-order-detail", "ok", seconds)
    metrics.observe_message("shoptet-get-order-detail", "trash", 100.0)
    metrics.observe_message("shoptet-get-orders-list", "retry", 0.02)

    samples = scraped(metrics)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    detail = "shoptet-get-order-detail"
    assert value("shoptet_worker_messages_total", node=detail, outcome="ok") == 3
    assert value("shoptet_worker_messages_total", node=detail, outcome="trash") == 1
    assert value("shoptet_worker_messages_total", node="shoptet-get-orders-list", outcome="retry") == 1
    # a duration equal to a bucket's bound counts in that bucket (le: less or equal)
    assert value("shoptet_worker_message_seconds_bucket", node=detail, le="0.005") == 2
    assert value("shoptet_worker_message_seconds_bucket", node=detail, le="0.25") == 3
    assert value("shoptet_worker_message_seconds_bucket", node=detail, le="60.0") == 3
    assert value("shoptet_worker_message_seconds_bucket", node=detail, le="+Inf") == 4
    assert value("shoptet_worker_message_seconds_count", node=detail) == 4
    assert abs(value("shoptet_worker_message_seconds_sum", node=detail) - 100.208) < 1e-9


def test_endpoint_labels_replace_ids() -> None:
    assert endpoint_label("/api/orders/2024000123/status?x=1") == "/api/orders/{id}/status"
    assert endpoint_label("/api/eshop") == "/api/eshop"
    # a job id with no digit in it (one in ten) got a label value of its own, for good
    assert endpoint_label("/api/system/jobs/kqzwbxa") == "/api/system/jobs/{id}"
    assert endpoint_label("/api/orders/A B/notes") == "/api/orders/{id}/notes"
    assert endpoint_label("/api/webhooks/renew-signature-key") == "/api/webhooks/renew-signature-key"


def test_the_path_words_are_those_of_shoptets_api_description() -> None:
    import yaml

    from tests.openapi_spec import SPEC_PATH
    from worker.shoptet_paths import SHOPTET_PATH_WORDS

    paths = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))["paths"]
    words = {part for path in paths for part in path.split("/") if part and "{" not in part and "." not in part}
    assert words == SHOPTET_PATH_WORDS


async def test_metrics_are_served_while_the_store_is_down() -> None:
    """The trash size comes from the store; its outage failed the whole scrape (500), and every
    series (lag, retries, 429s) went missing exactly when it mattered."""
    from types import SimpleNamespace

    import httpx

    from worker.errors import StoreUnavailable
    from worker.http.app import create_http_app

    class Down:
        async def count_trash(self) -> int:
            raise StoreUnavailable("database restarting")

    metrics = Metrics()
    metrics.trash_size.set(3)
    metrics.observe_message("shoptet-get-order-detail", "ok", 0.01)
    worker = SimpleNamespace(runtime=SimpleNamespace(metrics=metrics, store=Down()))
    app = create_http_app(worker)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "shoptet_worker_trash_size 3.0" in response.text  # the last count stands
    assert 'shoptet_worker_messages_total{node="shoptet-get-order-detail",outcome="ok"} 1.0' in response.text


async def test_a_scrape_does_not_wait_for_a_store_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled database (a failover, a partition: no refusal, no answer) held the scrape past
    Prometheus's timeout, and the whole target went missing. Its count goes on in the background,
    one at a time, and lands with a later scrape."""
    import asyncio
    from types import SimpleNamespace

    import httpx

    from worker.http import app as http_app

    monkeypatch.setattr(http_app, "TRASH_COUNT_WAIT_SECONDS", 0.05)
    answer = asyncio.Event()
    counts = 0

    class Stalled:
        async def count_trash(self) -> int:
            nonlocal counts
            counts += 1
            await answer.wait()
            return 7

    metrics = Metrics()
    metrics.trash_size.set(3)
    worker = SimpleNamespace(runtime=SimpleNamespace(metrics=metrics, store=Stalled()))
    app = http_app.create_http_app(worker)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://w") as client:
        for _ in range(2):
            response = await asyncio.wait_for(client.get("/metrics"), 5)
            assert response.status_code == 200 and "shoptet_worker_trash_size 3.0" in response.text
        answer.set()
        await asyncio.sleep(0.05)
        # landed when it ended, between scrapes: set only by a scrape that saw it end, a count
        # slower than the wait never landed
        assert scraped(metrics)[("shoptet_worker_trash_size", ())] == 7
        response = await client.get("/metrics")
    assert "shoptet_worker_trash_size 7.0" in response.text
    assert counts == 2  # one count at a time, not one more per scrape (the last scrape's is new)
