"""How the inspector shows a captured message: its head, its body by type, and a curl command.

Pure and total: captured bytes are whatever a visitor or a target sent, so nothing here
raises on them; what cannot be read as its type falls back to text or a hex dump.  Every
decoding is bounded (gzip and deflate at MAX_DECODED bytes, multipart at MAX_PARTS parts).
The relayed bytes are never changed: this only reads copies.
"""

import base64
import binascii
import json
import shlex
import zlib
from urllib.parse import parse_qsl, urlsplit

from tpot.http.framing import header_tokens, parse_headers

MAX_DECODED = 4 * 1024 * 1024
MAX_PARTS = 100
HEX_BYTES = 4096
PREVIEW = 200
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/x-icon"})
_TEXT_TYPES = ("text/", "application/xml", "application/javascript", "application/ecmascript", "image/svg+xml")
# Headers a curl command sets itself, or that the client added on the way to the target.
_NOT_FOR_CURL = frozenset({"host", "content-length", "transfer-encoding", "connection", "x-forwarded-for",
                           "x-forwarded-proto", "x-forwarded-host"})


def split_message(raw):
    """(head lines, body bytes) of a captured message; a response's interim (1xx) heads are
    skipped.  An unfinished head is all head."""
    while True:
        head, found, body = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if found and _is_interim(lines[0]) and body:
            raw = body
            continue
        return lines, body


def _is_interim(line):
    parts = line.split(b" ", 2)
    return len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1][:1] == b"1" and parts[1] != b"101"


def message_body(raw):
    """A message's body without its transfer framing (chunks joined), as far as it was kept."""
    lines, body = split_message(raw)
    if b"chunked" in header_tokens(parse_headers(lines), b"transfer-encoding"):
        return dechunk(body)
    return body


def dechunk(data):
    """The data of a chunked body, tolerating one cut anywhere."""
    out = []
    while data:
        line, found, rest = data.partition(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip() or b"x", 16)
        except ValueError:
            break
        if size == 0:
            break
        out.append(rest[:size])
        if not found or len(rest) < size:
            break
        data = rest[size + 2:]
    return b"".join(out)


def present_message(raw, truncated=False):
    """{"start_line", "headers": [[name, value]], "body"} of a captured message."""
    lines, _ = split_message(raw)
    headers = parse_headers(lines)
    return {
        "start_line": _text(lines[0]),
        "headers": [[_text(name.strip()), _text(value.strip())]
                    for name, _, value in (line.partition(b":") for line in lines[1:] if line)],
        "body": present_body(message_body(raw), _media_type(headers), _content_coding(headers), truncated),
    }


def _text(data):
    return data.decode("latin-1")


def _media_type(headers):
    values = headers.get(b"content-type", [b""])
    return values[0].decode("latin-1").strip()


def _content_coding(headers):
    codings = header_tokens(headers, b"content-encoding")
    return codings[-1].decode("latin-1") if codings else None


def present_body(body, content_type="", coding=None, truncated=False):
    """The view of a body: {"kind", "size", "truncated", "encoding", ...} by its type."""
    view = {"size": len(body), "truncated": truncated, "encoding": None}
    if coding in ("gzip", "x-gzip", "deflate"):
        decoded, cut = decode_content(body, coding)
        if decoded is not None:
            body = decoded
            view.update(size=len(body), encoding="deflate" if coding == "deflate" else "gzip",
                        truncated=truncated or cut)
    if not body:
        return {**view, "kind": "empty"}
    media_type = content_type.split(";", 1)[0].strip().lower()
    view.update(_by_type(body, media_type, content_type))
    return view


def decode_content(body, coding):
    """(decoded bytes, whether MAX_DECODED cut them), or (None, False) when they do not decode."""
    attempts = (16 + zlib.MAX_WBITS,) if coding != "deflate" else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    for wbits in attempts:
        decompressor = zlib.decompressobj(wbits)
        try:
            decoded = decompressor.decompress(body, MAX_DECODED)
        except zlib.error:
            continue
        return decoded, bool(decompressor.unconsumed_tail)
    return None, False


def _by_type(body, media_type, content_type):
    if media_type == "application/json" or media_type.endswith("+json"):
        return _json(body)
    if media_type == "application/x-www-form-urlencoded":
        return {"kind": "form", "fields": _pairs(body.decode("latin-1"))}
    if media_type.startswith("multipart/"):
        parts = _multipart(body, content_type)
        if parts is not None:
            return {"kind": "multipart", "parts": parts}
    if media_type in IMAGE_TYPES:
        return {"kind": "image", "media_type": media_type, "data": base64.b64encode(body).decode("ascii")}
    text = _readable(body)
    if media_type.startswith(_TEXT_TYPES) or text is not None:
        return {"kind": "text", "text": text if text is not None else body.decode("utf-8", "replace")}
    return {"kind": "hex", "text": hex_dump(body[:HEX_BYTES])}


def _json(body):
    text = body.decode("utf-8", "replace")
    try:
        return {"kind": "json", "text": json.dumps(json.loads(text), indent=2, ensure_ascii=False), "error": None}
    except ValueError as error:
        where = f"line {error.lineno}, column {error.colno}: {error.msg}" if hasattr(error, "lineno") else str(error)
        return {"kind": "json", "text": text, "error": where}
    except RecursionError:
        return {"kind": "json", "text": text, "error": "nested too deeply to show"}


def _pairs(text):
    return [[name, value] for name, value in parse_qsl(text, keep_blank_values=True, max_num_fields=10000)]


def _readable(body):
    """The body as text when it is UTF-8 without control characters (but tabs and newlines)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 32 and c not in "\t\r\n" or ord(c) == 127 for c in text):
        return None
    return text


def _multipart(body, content_type):
    boundary = _parameter(content_type, "boundary")
    if not boundary:
        return None
    delimiter = b"--" + boundary.encode("latin-1")
    pieces = body.split(delimiter)[1:MAX_PARTS + 1]
    parts = []
    for piece in pieces:
        if piece.startswith(b"--"):
            break
        parts.append(_part(piece.removeprefix(b"\r\n").removesuffix(b"\r\n")))
    return parts


def _part(piece):
    head, _, content = piece.partition(b"\r\n\r\n")
    lines = [b"X"] + [line for line in head.split(b"\r\n") if line]
    headers = parse_headers(lines)
    disposition = _text(headers.get(b"content-disposition", [b""])[0])
    content_type = _text(headers.get(b"content-type", [b""])[0]) or None
    text = _readable(content)
    return {
        "headers": [[_text(n.strip()), _text(v.strip())] for n, _, v in (line.partition(b":") for line in lines[1:])],
        "name": _parameter(disposition, "name"),
        "filename": _parameter(disposition, "filename"),
        "content_type": content_type,
        "size": len(content),
        "preview": text[:PREVIEW] if text is not None else "",
    }


def _parameter(value, name):
    """A parameter of a header value (`form-data; name="a"`), unquoted; None if absent."""
    for part in value.split(";")[1:]:
        key, equals, found = part.strip().partition("=")
        if equals and key.strip().lower() == name:
            return found.strip().strip('"')
    return None


def hex_dump(data):
    """`00000000  48 65 6c 6c 6f ...  |Hello...|`, 16 bytes a line."""
    lines = []
    for offset in range(0, len(data), 16):
        row = data[offset:offset + 16]
        hexes = " ".join(f"{byte:02x}" for byte in row)
        shown = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in row)
        lines.append(f"{offset:08x}  {hexes:<47}  |{shown}|")
    return "\n".join(lines)


def query_parameters(path):
    """The decoded query parameters of a request target, in order."""
    try:
        return _pairs(urlsplit(path).query)
    except ValueError:
        return []


def curl_command(exchange, public_url):
    """A shell-safe curl command line sending the same request to the tunnel's public URL."""
    lines, _ = split_message(exchange.request.raw)
    body = message_body(exchange.request.raw)
    words = ["curl"]
    if exchange.method != "GET":
        words += ["-X", exchange.method]
    for name, _, value in (line.partition(b":") for line in lines[1:]):
        if name.strip().lower().decode("latin-1") not in _NOT_FOR_CURL:
            words += ["-H", f"{_text(name.strip())}: {_text(value.strip())}"]
    note = ""
    if body:
        text = _readable(body)
        if text is not None and not exchange.request.truncated:
            words += ["--data-binary", text]
        else:
            why = "was cut at 1 MiB" if exchange.request.truncated else "is binary"
            words += ["--data-binary", "@body.bin"]
            note = f"  # the body ({exchange.request.body_size} bytes) {why}: save it as body.bin"
    words.append(public_url + exchange.path)
    return " ".join(shlex.quote(word) for word in words) + note


def decode_base64(text):
    """Bytes of base64 text, or None when it is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None
