"""``run_simulator``: serve the simulator in the foreground (``shoptet-worker simulator``)."""

from __future__ import annotations

import uvicorn

from simulator.app import create_app, freeze_seeded_data
from simulator.config import SimulatorConfig


def run_simulator(
    port: int,
    host: str,
    orders: int,
    products: int,
    eshops: int,
    seed: int,
    latency_ms: float,
    fault_rate: float,
) -> None:
    """Seed, print each e-shop's private API token, and serve until interrupted."""
    wildcard = host in ("0.0.0.0", "::")
    public_host = "127.0.0.1" if wildcard else host
    config = SimulatorConfig(
        orders=orders,
        products=products,
        eshops=eshops,
        seed=seed,
        latency_ms=latency_ms,
        fault_rate=fault_rate,
        # on every address: result URLs follow the address each request came to, so a worker on
        # another host gets one it can reach (not this host's 127.0.0.1)
        public_url=None if wildcard else f"http://{public_host}:{port}",
    )
    app = create_app(config)
    freeze_seeded_data()
    print(f"Shoptet API simulator on http://{public_host}:{port} (admin: /_sim/, docs: /_sim/docs)", flush=True)
    print(f"OAuth client_id={config.oauth_client_id} client_secret={config.oauth_client_secret}", flush=True)
    for eshop in app.state.sim.eshops:
        print(f"eshop {eshop.eshop_id}: Shoptet-Private-API-Token: {eshop.premium_token}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
