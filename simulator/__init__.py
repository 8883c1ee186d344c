"""A Shoptet API simulator, checked against Shoptet's own OpenAPI description.

It serves the demo, the end-to-end tests and the benchmarks: the Shoptet REST API under ``/api/``
(envelope ``{data, errors, metadata}``, Shoptet's limits, 423 locks, paging, change feeds, snapshot
jobs, webhooks), the e-shop's OAuth server under ``/action/ApiOAuthServer/``, and an admin API
under ``/_sim/`` that is never counted as Shoptet traffic.

Starting it
    * CLI: ``shoptet-worker simulator --port 8090 --orders 1000`` (``simulator.cli.run_simulator``),
      or ``python -m simulator --port 8090``; both print each e-shop's private API token.
    * Tests: ``async with SimulatorServer(SimulatorConfig(orders=50)) as sim:`` (or ``with``, or
      ``start()``/``stop()``) serves on 127.0.0.1 with a free port; ``sim.url`` is both the API base
      and the OAuth server base; ``sim.state`` is the live ``SimState`` (data, stats, config).
    * In an existing ASGI setup: ``create_app(config)``; the state is ``app.state.sim``.

Credentials (all deterministic for a given ``seed``)
    * E-shop N (0-based) has id ``config.first_eshop_id + N`` (100001, 100002, ...).
    * Its private API token (``Shoptet-Private-API-Token``) is ``sim.premium_token(N)``, also
      ``sim.state.eshops[N].premium_token``, ``sim.premium_tokens()`` (eshopId -> token),
      ``GET /_sim/eshops``, or the formula ``simulator.seed.premium_token(seed, eshop_id)``.
    * The token decides which e-shop a request hits.
    * OAuth addon: client id/secret are ``config.oauth_client_id`` / ``config.oauth_client_secret``
      (default ``sim-client`` / ``sim-secret``). ``POST /_sim/oauth/codes {"eshopId": 100001,
      "redirectUri": "..."}`` -> ``{"code"}`` (255 chars, one use, 5 minutes); exchange it with
      ``POST /action/ApiOAuthServer/token`` (form: code, client_id, client_secret, redirect_uri,
      scope=api, grant_type=authorization_code) for the permanent OAuth token, then
      ``GET /action/ApiOAuthServer/getAccessToken`` with ``Authorization: Bearer <oauth token>``
      for 30-minute access tokens (``Shoptet-Access-Token``; at most 5 valid, a 6th evicts the
      oldest). ``access_token_ttl_seconds`` shortens the lifetime; ``POST /_sim/clock/advance
      {"seconds": 1800}`` expires tokens without waiting.
    * Webhook signature key: ``sim.state.eshops[N].signature_key`` (or the value returned by
      ``POST /api/webhooks/renew-signature-key``).

Admin API (``/_sim/``; JSON bodies, any Content-Type; ``eshopId`` defaults to the first e-shop)
    ``GET /eshops``, ``POST /oauth/codes``, ``POST /orders`` / ``PATCH /orders/{code}`` /
    ``DELETE /orders/{code}?eshopId=`` (change feed + order:create/update/delete webhooks),
    ``PATCH /products/{guid}`` (product change feed + product:update), ``PATCH /stocks/{stockId}
    {"data": [{"productCode", "amountChange"}]}`` (stock:movement), ``GET|PUT /config`` (latency,
    faults, limits at runtime), ``GET /stats``, ``POST /stats/reset``, ``POST /clock/advance``,
    ``GET /webhooks/deliveries``.

Behaviour worth knowing
    * Snapshot endpoints answer 403 until a ``job:finished`` webhook is registered (as Shoptet
      does; ``require_job_webhook=False`` turns that off).
    * Change feeds report a creation as ``edit`` (the spec says so; ``creation_change_type="add"``).
    * Injected "drop" faults close the connection mid-answer; stats count them as status 0.
"""

from simulator.app import create_app
from simulator.config import SimulatorConfig
from simulator.server import SimulatorServer

__all__ = ["SimulatorConfig", "SimulatorServer", "create_app"]
