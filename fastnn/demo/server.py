"""The demo's HTTP server: the page, the JSON API and the training event stream.

Built on the standard library's ThreadingHTTPServer: the demo then needs nothing beyond
fastnn itself, and a thread per connection suits the work. A prediction is a few compiled
kernel calls that release the GIL, the event stream is a thread blocked on a condition, and
an ASGI stack (uvicorn plus a framework) would run both in a thread pool anyway.

Endpoints:
    GET  /                   the page (and /static/<file>: its script and style)
    GET  /api/model          the served model: description, layers, test accuracy, version
    POST /api/predict        {"image": 28x28 or 784 numbers in [0, 1]} or {"drawing": ...}
                             -> {"label", "probabilities", "activations", "input", "model"}
    POST /api/train          training parameters -> 202, or 409 while a run is going
    POST /api/train/cancel   -> 200, or 409 when nothing runs
    GET  /api/train/events   server-sent events of the current (or last) run, then live

Every error is a JSON {"error": message} with a 4xx status, and the server keeps serving.
"""

import base64
import binascii
import json
import math
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import ClassVar
from urllib.parse import urlsplit

import numpy as np

from . import models
from .preprocess import SIZE, mnist_style
from .training import TrainingHub

MAX_BODY_BYTES = 1 << 20
# An oversized body up to this size is read and dropped before the 413, larger ones are not.
DRAIN_LIMIT_BYTES = 16 << 20
MAX_DRAWING_SIDE = 1024
# A stream sends a comment this often when idle, which also notices a closed tab.
HEARTBEAT_S = 10.0
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


class RequestError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _static_files():
    """{name: (content type, bytes)} of the page's files, read once from the package."""
    root = resources.files("fastnn.demo") / "static"
    files = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (STATIC_TYPES[suffix], entry.read_bytes())
    return files


def parse_image(value):
    """A (28, 28) float32 array from 28 rows of 28 numbers or 784 numbers, all in [0, 1]."""
    if not isinstance(value, list):
        raise RequestError(400, "image must be a list: 28 rows of 28 numbers, or 784 numbers")
    if len(value) == SIZE and all(isinstance(row, list) for row in value):
        if any(len(row) != SIZE for row in value):
            raise RequestError(
                400,
                f"image must have 28 rows of 28 numbers, got rows of "
                f"{sorted({len(row) for row in value})} numbers",
            )
        flat = [v for row in value for v in row]
    elif len(value) == SIZE * SIZE:
        flat = value
    else:
        raise RequestError(
            400, f"image must be 28 rows of 28 numbers or 784 numbers, got a list of {len(value)}"
        )
    if not all(type(v) in (int, float) for v in flat):
        bad = next(v for v in flat if type(v) not in (int, float))
        raise RequestError(400, f"image values must be numbers, got {json.dumps(bad)[:40]}")
    a = np.array(flat, dtype=np.float64)
    if not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0:
        raise RequestError(400, "image values must be finite numbers in [0, 1]")
    return a.astype(np.float32).reshape(SIZE, SIZE)


def parse_drawing(value):
    """Ink in [0, 1] (white on black) from {"width", "height", "data": base64 of width *
    height bytes, 0-255} or a 2-D list of numbers in [0, 1]."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"width", "height", "data"})
        if unknown:
            raise RequestError(400, f"drawing has unknown field(s) {unknown}")
        width, height, data = value.get("width"), value.get("height"), value.get("data")
        for name, side in (("width", width), ("height", height)):
            if type(side) is not int or not 1 <= side <= MAX_DRAWING_SIDE:
                raise RequestError(
                    400,
                    f"drawing {name} must be an integer from 1 to "
                    f"{MAX_DRAWING_SIDE}, got {json.dumps(side)[:40]}",
                )
        if not isinstance(data, str):
            raise RequestError(400, "drawing data must be a base64 string of width * height bytes")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(400, "drawing data is not valid base64") from None
        if len(raw) != width * height:
            raise RequestError(
                400,
                f"drawing data must hold width * height = {width * height} bytes, got {len(raw)}",
            )
        return np.frombuffer(raw, np.uint8).reshape(height, width) / 255.0
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        widths = {len(row) for row in value}
        if (
            len(widths) != 1
            or 0 in widths
            or len(value) > MAX_DRAWING_SIDE
            or max(widths) > MAX_DRAWING_SIDE
        ):
            raise RequestError(
                400,
                f"drawing rows must all have the same length, 1 to "
                f"{MAX_DRAWING_SIDE}, with at most {MAX_DRAWING_SIDE} rows",
            )
        flat = [v for row in value for v in row]
        if not all(type(v) in (int, float) for v in flat):
            raise RequestError(400, "drawing values must be numbers")
        a = np.array(flat, dtype=np.float64).reshape(len(value), -1)
        if not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0:
            raise RequestError(400, "drawing values must be finite numbers in [0, 1]")
        return a
    raise RequestError(400, 'drawing must be {"width", "height", "data"} or a 2-D list of numbers')


class DemoServer(ThreadingHTTPServer):
    """Serves `served` (a models.ServedModel) until shutdown(); close() ends the streams and
    any training run."""

    daemon_threads = True  # a tab's open event stream must not keep the process alive
    allow_reuse_address = True

    def __init__(self, served, host="127.0.0.1", port=8000, quiet=True):
        self._served = served
        self._served_lock = threading.Lock()
        self.static = _static_files()
        self.quiet = quiet
        self.hub = TrainingHub(self.set_model)
        self.loopback_only = host in LOOPBACK_NAMES
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), DemoHandler)

    @property
    def served(self):
        return self._served

    def set_model(self, served):
        with self._served_lock:  # one reference assignment; the lock orders concurrent swaps
            self._served = served

    @property
    def url(self):
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"

    def close(self):
        self.hub.close()
        self.server_close()


class DemoHandler(BaseHTTPRequestHandler):
    server_version = "fastnn-demo"
    protocol_version = "HTTP/1.1"  # keep-alive: the page's predictions reuse one connection
    timeout = 30  # a client that stops sending mid-request loses its connection, not a thread
    # headers and body go out as two writes: without TCP_NODELAY the second waits for the
    # client's delayed ACK, 40 ms on Linux, which would be most of a prediction's round trip
    disable_nagle_algorithm = True

    # ---- plumbing ----------------------------------------------------------------------------

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send(self, status, body, content_type, extra_headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, payload):
        body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
        self._send(status, body, "application/json")

    def _error(self, status, message):
        self._json(status, {"error": message})

    def _check_host(self):
        """Bound to loopback, answer only requests addressed to a loopback name: a web page
        elsewhere cannot reach the server by pointing its own domain at 127.0.0.1."""
        if not self.server.loopback_only:
            return
        host = self.headers.get("Host", "")
        name = urlsplit("//" + host).hostname or ""
        if name not in LOOPBACK_NAMES:
            raise RequestError(
                403, f"this server answers requests for localhost only, not {host[:80]!r}"
            )

    def _read_json(self):
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RequestError(415, "send the request body as Content-Type: application/json")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise RequestError(411, "send a Content-Length, not a chunked body")
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "a Content-Length header is required")
        try:
            length = int(length)
        except ValueError:
            raise RequestError(400, "Content-Length must be an integer") from None
        if length < 0:
            raise RequestError(400, "Content-Length must not be negative")
        if length > MAX_BODY_BYTES:
            if length <= DRAIN_LIMIT_BYTES:  # read it, so the client sees the answer, not a reset
                remaining = length
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            raise RequestError(
                413, f"the request body is {length} bytes; the limit is {MAX_BODY_BYTES}"
            )
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise RequestError(400, "the request body ended early")
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:  # RecursionError: deep nesting
            raise RequestError(400, f"the request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise RequestError(400, "the request body nests too deeply") from None

    def _dispatch(self, routes):
        path = urlsplit(self.path).path
        try:
            self._check_host()
            handler = routes.get(path)
            if handler is None:
                if self.command == "GET" and path.startswith("/static/"):
                    return self._static(path[len("/static/") :])
                other = {"GET": self.POST_ROUTES, "POST": self.GET_ROUTES}.get(self.command, {})
                if path in other:
                    raise RequestError(405, f"{path} does not take {self.command}")
                raise RequestError(404, f"no such endpoint: {path[:100]}")
            handler(self)
        except RequestError as exc:
            if exc.status in (400, 411, 413, 415):
                # the body may not have been read: do not parse leftovers as a next request
                self.close_connection = True
            self._error(exc.status, str(exc))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 (a bug must cost one request, not the server)
            self.close_connection = True
            self.log_error("error answering %s %s: %r", self.command, path[:100], exc)
            try:
                self._error(500, f"internal error: {type(exc).__name__}: {exc}")
            except OSError:
                pass

    def do_GET(self):
        self._dispatch(self.GET_ROUTES)

    def do_POST(self):
        self._dispatch(self.POST_ROUTES)

    # ---- endpoints ---------------------------------------------------------------------------

    def _static(self, name):
        entry = self.server.static.get(name)
        if entry is None:
            raise RequestError(404, f"no such file: {name[:100]}")
        self._send(200, entry[1], entry[0])

    def _index(self):
        self._static("index.html")

    def _model(self):
        self._json(200, {**self.server.served.info(), "training": self.server.hub.state()})

    def _predict(self):
        request = self._read_json()
        if not isinstance(request, dict):
            raise RequestError(400, 'the request must be a JSON object with "image" or "drawing"')
        unknown = sorted(set(request) - {"image", "drawing", "activations"})
        if unknown:
            raise RequestError(
                400,
                f'unknown field(s) {unknown}; expected "image" or '
                f'"drawing", and optionally "activations"',
            )
        if ("image" in request) == ("drawing" in request):
            raise RequestError(
                400, 'give exactly one of "image" (28x28 or 784 numbers in [0, 1]) and "drawing"'
            )
        want_activations = request.get("activations", True)
        if not isinstance(want_activations, bool):
            raise RequestError(400, "activations must be true or false")
        if "image" in request:
            image = parse_image(request["image"])
        else:
            image = mnist_style(parse_drawing(request["drawing"]))
        served = self.server.served  # one model for the whole answer, even if one is swapped in
        result = served.predict(image, activations=want_activations)
        result["model"] = served.version
        if "drawing" in request:
            result["input"] = np.round(image, 3).tolist()
        self._json(200, result)

    def _train(self):
        recipe = self._read_json()
        try:
            recipe = models.check_recipe(recipe)
        except (TypeError, ValueError) as exc:
            raise RequestError(400, str(exc)) from None
        if not self.server.hub.start(recipe):
            raise RequestError(409, "a training run is already going; cancel it or wait")
        self._json(202, {"started": True, "run": self.server.hub.state()["run"], "recipe": recipe})

    def _cancel(self):
        self._read_json()
        if not self.server.hub.cancel():
            raise RequestError(409, "no training run is going")
        self._json(200, {"cancelling": True})

    def _events(self):
        """Server-sent events: every event of the current run, then new ones as they come."""
        hub = self.server.hub
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        position = (0, 0)
        while True:
            generation, events, closed = hub.follow(position, HEARTBEAT_S)
            if closed:
                return
            if generation != position[0]:
                position = (generation, 0)
            lines = [f"data: {json.dumps(_finite(e), separators=(',', ':'))}\n\n" for e in events]
            self.wfile.write(("".join(lines) or ": heartbeat\n\n").encode())
            self.wfile.flush()
            position = (generation, position[1] + len(events))

    GET_ROUTES: ClassVar[dict] = {
        "/": _index,
        "/index.html": _index,
        "/api/model": _model,
        "/api/train/events": _events,
    }
    POST_ROUTES: ClassVar[dict] = {
        "/api/predict": _predict,
        "/api/train": _train,
        "/api/train/cancel": _cancel,
    }


def _finite(value):
    """NaN and infinities (a diverging run's loss) as null: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
