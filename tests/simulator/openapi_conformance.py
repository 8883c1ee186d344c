"""Check simulator traffic against Shoptet's own OpenAPI 3.1 description.

One reusable entry point per direction: ``assert_response_conforms(method, template, status, body)``
and ``assert_request_conforms(method, template, body)``. The 54k-line spec is parsed once per
process (``spec()`` is cached). A status the spec does not declare for an operation (401, 429,
423, most 404s) is checked against the error envelope every Shoptet error uses: ``data: null``,
a non-empty ``errors`` list of ``{errorCode, message, instance}`` and ``metadata.requestId``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.openapi_spec import SPEC_PATH

SPEC_URI = "urn:shoptet-openapi"


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


class Spec:
    def __init__(self, path: Path = SPEC_PATH) -> None:
        with path.open(encoding="utf-8") as handle:
            self.doc: dict[str, Any] = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for item in self.doc["paths"].values():  # YAML reads `200:` as an int; JSON pointers need text
            for op in item.values():
                if isinstance(op, dict) and "responses" in op:
                    op["responses"] = {str(k): v for k, v in op["responses"].items()}
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    def validator(self, pointer: str) -> Draft202012Validator:
        if pointer not in self._validators:
            schema = {"$ref": f"{SPEC_URI}#{pointer}"}
            self._validators[pointer] = Draft202012Validator(
                schema, registry=self.registry, format_checker=FormatChecker()
            )
        return self._validators[pointer]

    def operation(self, method: str, template: str) -> dict[str, Any]:
        item = self.doc["paths"].get(template)
        assert item is not None, f"{template} is not in Shoptet's OpenAPI description"
        op = item.get(method.lower())
        assert op is not None, f"{method} {template} is not in Shoptet's OpenAPI description"
        return op

    def error_envelope(self) -> Draft202012Validator:
        pointer = "/components/schemas"
        key = "error-envelope"
        if key not in self._validators:
            schema = {
                "type": "object",
                "additionalProperties": False,
                "required": ["data", "errors", "metadata"],
                "properties": {
                    "data": {"type": "null"},
                    "errors": {"allOf": [{"$ref": f"{SPEC_URI}#{pointer}/Errors"}, {"type": "array", "minItems": 1}]},
                    "metadata": {"$ref": f"{SPEC_URI}#{pointer}/Metadata"},
                },
            }
            self._validators[key] = Draft202012Validator(schema, registry=self.registry)
        return self._validators[key]


@functools.cache
def spec() -> Spec:
    return Spec()


def _problems(validator: Draft202012Validator, body: Any) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message[:300]}"
        for error in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    ]


def response_problems(method: str, template: str, status: int, body: Any) -> list[str]:
    op = spec().operation(method, template)
    problems: list[str] = []
    declared = op["responses"].get(str(status))
    if declared is not None and "application/json" in (declared.get("content") or {}):
        pointer = "/" + "/".join(
            _escape(p)
            for p in (
                "paths",
                template,
                method.lower(),
                "responses",
                str(status),
                "content",
                "application/json",
                "schema",
            )
        )
        problems += _problems(spec().validator(pointer), body)
    elif declared is None and 200 <= status < 300:
        problems.append(f"status {status} is not declared for {method} {template}")
    if status >= 400:
        problems += _problems(spec().error_envelope(), body)
    return problems


def assert_response_conforms(method: str, template: str, status: int, body: Any) -> None:
    problems = response_problems(method, template, status, body)
    assert not problems, f"{method} {template} -> {status} breaks the spec:\n" + "\n".join(problems[:20])


def assert_request_conforms(method: str, template: str, body: Any) -> None:
    op = spec().operation(method, template)
    assert "requestBody" in op, f"{method} {template} takes no body in the spec"
    pointer = "/" + "/".join(
        _escape(p) for p in ("paths", template, method.lower(), "requestBody", "content", "application/json", "schema")
    )
    problems = _problems(spec().validator(pointer), body)
    assert not problems, f"request body of {method} {template} breaks the spec:\n" + "\n".join(problems[:20])


def assert_schema_conforms(component: str, value: Any) -> None:
    """Validate against ``#/components/schemas/<component>`` (e.g. a webhook's ``notificationData``)."""
    problems = _problems(spec().validator(f"/components/schemas/{component}"), value)
    assert not problems, f"{component} breaks the spec:\n" + "\n".join(problems[:20])
