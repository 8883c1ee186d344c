"""Checks one recorded request against Shoptet's OpenAPI description (method, path, query, body).

The spec is 54k lines, so it is parsed once per session (see ``conftest.openapi``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.openapi_spec import SPEC_PATH

SPEC_URI = "urn:shoptet-openapi"
CONTENT_TYPE = "application/vnd.shoptet.v1.0"
AUTH_HEADERS = ("shoptet-private-api-token", "shoptet-access-token")


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    parameters: dict[tuple[str, str], dict[str, Any]]
    body_pointer: str | None


class OpenApiSpec:
    def __init__(self, path: Path = SPEC_PATH) -> None:
        with path.open(encoding="utf-8") as handle:
            self.doc: dict[str, Any] = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self.operations = self._operations()

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def _operations(self) -> list[Operation]:
        found = []
        for template, item in self.doc["paths"].items():
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            for method, op in item.items():
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                params = {}
                for raw in [*item.get("parameters", []), *op.get("parameters", [])]:
                    param = self._resolve(raw)
                    params[(param["in"], param["name"])] = param
                body = None
                content = (op.get("requestBody") or {}).get("content", {})
                if "application/json" in content:
                    body = "#/" + _pointer(
                        "paths", template, method, "requestBody", "content", "application/json", "schema"
                    )
                found.append(Operation(method.upper(), template, re.compile(f"^{regex}$"), params, body))
        # literal paths (``/api/orders/snapshot``) win over templates (``/api/orders/{code}``)
        found.sort(key=lambda o: (o.template.count("{"), -len(o.template)))
        return found

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        return Draft202012Validator(schema, registry=self.registry)

    def problems(self, request: httpx.Request) -> list[str]:
        """Everything about ``request`` that the spec does not allow (empty: valid)."""
        # the raw path: an escaped ``/`` inside a path parameter must not look like two segments
        method, path = request.method, request.url.raw_path.decode().split("?", 1)[0]
        operation = next((o for o in self.operations if o.method == method and o.pattern.match(path)), None)
        if operation is None:
            return [f"{method} {path}: no such operation in openapi.yaml"]
        where = f"{method} {operation.template}"
        errors: list[str] = []
        if request.headers.get("content-type") != CONTENT_TYPE:
            errors.append(f"{where}: Content-Type is {request.headers.get('content-type')!r}")
        if not any(h in request.headers for h in AUTH_HEADERS):
            errors.append(f"{where}: no Shoptet auth header")
        match = operation.pattern.match(path)
        assert match is not None
        values = {("path", k): unquote(v) for k, v in match.groupdict().items()}
        for key, value in request.url.params.multi_items():
            if ("query", key) not in operation.parameters:
                errors.append(f"{where}: unknown query parameter {key!r}")
            values[("query", key)] = value
        for (place, name), param in operation.parameters.items():
            if place not in ("path", "query"):
                continue
            if (place, name) not in values:
                if param.get("required"):
                    errors.append(f"{where}: missing required {place} parameter {name!r}")
                continue
            value = _coerce(values[(place, name)], param.get("schema", {}))
            for error in self._validator(param.get("schema", {})).iter_errors(value):
                errors.append(f"{where}: {place} parameter {name}={values[(place, name)]!r}: {error.message}")
        if operation.body_pointer is not None:
            try:
                body = json.loads(request.content or b"null")
            except ValueError:
                return [*errors, f"{where}: body is not JSON"]
            validator = self._validator({"$ref": f"{SPEC_URI}{operation.body_pointer}"})
            errors += [f"{where}: body {list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
        elif request.content:
            errors.append(f"{where}: the operation takes no body")
        return errors


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?\d+", value):
        return int(value)
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    return value
