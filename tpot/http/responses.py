"""Small plain-text HTTP responses the server answers with before closing a connection.

Pure: bytes built from a status and a text; writing them is the caller's business."""

from http import HTTPStatus


def error_response(status, message, extra_headers=()):
    """A complete `Connection: close` response whose body says what happened."""
    body = (message.rstrip("\n") + "\n").encode("utf-8")
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in extra_headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
