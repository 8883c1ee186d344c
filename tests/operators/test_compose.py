"""docker-compose.yml and Dockerfile, checked against the code (there is no Docker engine here):
commands resolve in the real Typer app, environment variables are real settings, images are pinned.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
import yaml

from worker.cli import app
from worker.settings import Settings

try:  # recent typer vendors click; older typer uses click itself
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError  # type: ignore[assignment]

ROOT = Path(__file__).parents[2]
EXACT_TAG = re.compile(r"^\d+\.\d+(\.\d+)?(-[a-z0-9.]+)?$")  # 16.4, 3.9.0, 3.11.10-slim
OUR_SERVICES = ("worker", "ingress")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _services(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def resolve_cli(args: list[str]) -> str:
    """Parse ``args`` the way ``shoptet-worker`` would, without running anything; the command path.

    Raises click's UsageError (unknown command, unknown option, bad value) like the real CLI.
    """
    command: Any = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="shoptet-worker")
    rest, path = list(args), []
    while hasattr(command, "get_command"):  # a group
        if not rest:
            raise UsageError("a group needs a subcommand", ctx)
        name, *rest = rest
        sub = command.get_command(ctx, name)
        if sub is None:
            raise UsageError(f"no such command {name!r}", ctx)
        command = sub
        path.append(name)
        ctx = typer.Context(command, info_name=name, parent=ctx)
    with command.make_context(ctx.info_name, rest, parent=ctx.parent):
        pass
    return " ".join(path)


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"image {image!r} has no tag"
    return tag


def test_resolver_rejects_what_the_cli_rejects() -> None:
    assert resolve_cli(["up", "--no-http"]) == "up"
    assert resolve_cli(["status", "--json", "--limit", "3"]) == "status"
    assert resolve_cli(["topology", "list"]) == "topology list"
    for bad in (["nope"], ["up", "--bogus"], ["status", "--limit", "x"], ["topology"]):
        with pytest.raises(UsageError):
            resolve_cli(bad)


def test_parses_with_the_expected_services(compose: dict[str, Any]) -> None:
    assert {"kafka", "postgres", "redis", *OUR_SERVICES} <= set(_services(compose))


def test_every_image_is_pinned_to_an_exact_version(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        assert "image" in service, f"{name}: no image"
        tag = _tag(service["image"])
        assert tag != "latest" and EXACT_TAG.match(tag), f"{name}: {service['image']} is not an exact version"
    froms = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert froms and all(EXACT_TAG.match(_tag(image)) for image in froms), froms


def test_dockerfile_runs_the_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["shoptet-worker"\]$', text, flags=re.M)
    assert "pip install ." in text
    [cmd] = re.findall(r"^CMD (\[.*\])$", text, flags=re.M)
    resolve_cli(yaml.safe_load(cmd))
    assert 'shoptet-worker = "worker.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_worker_command_is_a_real_cli_command(compose: dict[str, Any]) -> None:
    assert resolve_cli(_command(_services(compose)["worker"])) == "up"


def test_ingress_command_is_a_real_cli_command(compose: dict[str, Any]) -> None:
    assert resolve_cli(_command(_services(compose)["ingress"])) == "ingress"


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_environment_is_real_settings(compose: dict[str, Any], name: str) -> None:
    fields = {f.upper() for f in Settings.model_fields}
    env = _environment(_services(compose)[name])
    unknown = sorted(k for k in env if k.upper() not in fields)
    assert not unknown, f"{name} sets variables no setting reads: {unknown}"
    assert env["ENVIRONMENT"] == "production"
    assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "REDIS_URL", "SECRET_KEY"} <= set(env)
    assert env["SECRET_KEY"].startswith("${SECRET_KEY"), "the secret key comes from the operator's environment"
    assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_worker_scales_and_ingress_is_published(compose: dict[str, Any]) -> None:
    services = _services(compose)
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker, "`--scale worker=N` needs neither"
    assert "NODES" in _environment(worker)
    ingress = services["ingress"]
    assert any(str(p).split(":")[-2:] == ["8080", "8080"] for p in ingress["ports"])
    assert _environment(ingress)["HTTP_HOST"] == "0.0.0.0"  # reachable from outside the container


def test_kafka_is_a_single_kraft_node(compose: dict[str, Any]) -> None:
    kafka = _services(compose)["kafka"]
    env = _environment(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"


def test_the_workers_know_the_public_url_and_the_addon(compose: dict[str, Any]) -> None:
    """webhooks-subscribe runs in the workers and registers PUBLIC_BASE_URL: set on the ingress
    alone, every e-shop's webhooks pointed at http://127.0.0.1:8080. The install callback (ingress)
    and token refreshes (workers) both need the addon's OAuth settings."""
    needed = {
        "PUBLIC_BASE_URL",
        "SHOPTET_OAUTH_CLIENT_ID",
        "SHOPTET_OAUTH_CLIENT_SECRET",
        "SHOPTET_OAUTH_REDIRECT_URL",
        "SHOPTET_OAUTH_SERVER_URL",
    }
    for name in OUR_SERVICES:
        assert needed <= set(_services(compose)[name]["environment"]), name


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_a_stop_waits_for_the_graceful_timeout(compose: dict[str, Any], name: str) -> None:
    """Docker kills a container 10 s after SIGTERM by default: the ingress's webhooks in flight and
    the worker's records were cut off before GRACEFUL_TIMEOUT_SECONDS."""
    grace = _services(compose)[name].get("stop_grace_period", "10s")
    assert int(grace.removesuffix("s")) > Settings().graceful_timeout_seconds
