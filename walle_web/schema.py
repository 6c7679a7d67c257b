"""OpenAPI post-processing: every operation documents the error statuses it can answer.

Added by rule, so a new endpoint is documented without anyone remembering to:
- 400 everywhere (bad query parameters and NUL characters are refused for every URL),
- 401 and 403 where a caller authenticates, 404 where the path names an object,
- 413 and 415 where there is a request body, 429 everywhere (throttles).
Views add the statuses only they answer (409 for release actions, 503 for busy upload checks)
with `extend_schema(responses=...)`.
"""

from __future__ import annotations

ERROR_SCHEMA = {
    "type": "object",
    "description": (
        "Why the request was refused: `detail` for the request as a whole, or a field name "
        "mapped to messages that say what to fix."
    ),
    "properties": {
        "detail": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        }
    },
    "additionalProperties": True,
}

DESCRIPTIONS = {
    "400": "Invalid input; the body says which field and how to fix it.",
    "401": "Not authenticated: send `Authorization: Token <key>` (devices: `Bearer <token>`).",
    "403": "Authenticated but not allowed (role in the app, or a refused credential).",
    "404": "No such object among those visible to the caller.",
    "409": "The action is not possible in the object's current state.",
    "413": "The request body is larger than the limit.",
    "415": "Unsupported Content-Type.",
    "429": "Too many requests; retry after the `Retry-After` header's seconds.",
    "503": "Busy; retry after the `Retry-After` header's seconds.",
}

# Operations anyone may call without credentials (no 401 from them).
ANONYMOUS = {("/api/v1/devices/enroll/", "post")}


def _error(code: str) -> dict:
    return {
        "description": DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def document_error_responses(result, generator, request, public):
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = {"400", "429"}
            if (path, method) not in ANONYMOUS:
                codes |= {"401", "403"}
            if "{" in path:
                codes.add("404")
            if "requestBody" in operation:
                codes |= {"413", "415"}
            responses = operation["responses"]
            for code in sorted(codes):
                responses.setdefault(code, _error(code))
            for code, response in responses.items():
                # Statuses a view declared without a body get the error body.
                if code in DESCRIPTIONS and not response.get("content"):
                    responses[code] = _error(code)
    return result
