"""What `/v1/infer` takes and answers, for the app and its OpenAPI schema alike.

`HTTP_STATUS` is the one table from error code to HTTP status. The documented error
responses are built from it, so `/docs` lists every status the app sends, each with the
`Result` error model and the codes behind it. `INFER_REQUEST_BODY` describes the bodies
`read_upload` takes: raw image bytes, a multipart upload, or a JSON envelope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from function.contract.errors import ErrorCode
from function.contract.wire import JobEnvelope, Result

__all__ = [
    "HTTP_STATUS",
    "INFER_REQUEST_BODY",
    "NOT_ACCEPTABLE",
    "error_responses",
    "infer_responses",
    "status_of",
]

HTTP_STATUS: Final[Mapping[ErrorCode, int]] = {
    ErrorCode.BAD_IMAGE: 400,
    ErrorCode.BAD_ENVELOPE: 422,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.TOO_MANY_PIXELS: 413,
    ErrorCode.UNKNOWN_FUNCTION: 404,
    ErrorCode.INPUT_NOT_FOUND: 422,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.INFERENCE_FAILED: 503,
    ErrorCode.MAX_DELIVER_EXCEEDED: 503,
    ErrorCode.NOT_READY: 503,
    ErrorCode.RESULT_TOO_LARGE: 500,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.CANCELLED: 409,  # a job cancelled before its result (its status says so)
    ErrorCode.CONTENT_REJECTED: 422,  # its screen refused it (`SURGE_SCREEN`)
}
NOT_ACCEPTABLE: Final = 406
"""`Accept: image/png` for a result without an image output (code `unsupported_media_type`)."""

_NOTES: Final[Mapping[int, str]] = {
    400: "not a readable image, or a malformed multipart body",
    401: "with authentication on: no valid bearer token (`WWW-Authenticate: Bearer`)",
    403: "with authentication on: the tenant may not call this function",
    406: "`Accept: image/png` but the result has no image output",
    503: "`not_ready` comes with `Retry-After`",
}


def _binary(media: str) -> dict[str, Any]:
    return {"schema": {"type": "string", "contentMediaType": media}}


def status_of(result: Result) -> int:
    """The HTTP status for `result`: 200, or its error code's status (500 if unmapped)."""
    return HTTP_STATUS.get(result.error.code, 500) if result.error else 200


def error_responses(*, image: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for every error status, each a `Result` with `status: error`;
    with `image`, the 406 of content negotiation too."""
    codes: dict[int, list[str]] = {}
    for code, status in HTTP_STATUS.items():
        codes.setdefault(status, []).append(f"`{code.value}`")
    if image:
        codes.setdefault(NOT_ACCEPTABLE, []).append(f"`{ErrorCode.UNSUPPORTED_MEDIA_TYPE.value}`")
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted(codes):
        note = f" ({_NOTES[status]})" if status in _NOTES else ""
        description = f"Error result, `error.code` {' or '.join(codes[status])}{note}"
        responses[status] = {"model": Result, "description": description}
    return responses


def infer_responses() -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of `/v1/infer/{function}`: the result JSON or the image, and
    every error."""
    ok = {
        "description": "The result JSON; with `Accept: image/png` the image output itself",
        "content": {"image/png": _binary("image/png")},
    }
    return {200: ok, **error_responses(image=True)}


INFER_REQUEST_BODY: Final[dict[str, Any]] = {
    "required": True,
    "description": (
        "The image: raw bytes (PNG, JPEG or WebP, recognised from the bytes whatever the "
        "declared type, so `curl --data-binary @photo.jpg` works), a multipart upload with "
        "exactly one file under any field name (`curl -F image=@photo.jpg`), or a JSON "
        "envelope with the image in base64 or by `image_ref`."
    ),
    "content": {
        **{media: _binary(media) for media in ("image/png", "image/jpeg", "image/webp")},
        "application/octet-stream": _binary("application/octet-stream"),
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "image": {
                        "type": "string",
                        "contentMediaType": "application/octet-stream",
                        "description": "The image file (the one file part; any field name).",
                    }
                },
                "required": ["image"],
            }
        },
        "application/json": {"schema": JobEnvelope.model_json_schema()},
    },
}
"""The OpenAPI `requestBody` of `/v1/infer/{function}`."""
