"""The OpenAPI schema types the policy fields from the tables that validate them, and every
operation documents the error statuses it can answer (schemathesis checks the live answers
against it: tests/test_bad_input.py)."""

from __future__ import annotations

import pytest

from releases import policy

pytestmark = pytest.mark.django_db


def test_stages_target_and_delivery_are_typed_and_errors_documented(cast):
    schema = cast.api("viewer").get("/api/schema/?format=json").json()
    release = schema["components"]["schemas"]["ReleaseRequest"]["properties"]
    stage = release["stages"]["items"]
    assert stage["properties"]["soak_s"]["maximum"] == policy.STAGE_BOUNDS["soak_s"].hi
    assert stage["additionalProperties"] is False
    assert release["delivery"]["properties"]["timeout_s"]["maximum"] == 7 * policy.DAY
    assert release["target"]["properties"]["groups"]["items"]["type"] == "integer"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"400", "429"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)
    start = schema["paths"]["/api/v1/releases/{id}/start/"]["post"]["responses"]
    assert "409" in start and start["409"]["content"]["application/json"]["schema"]
