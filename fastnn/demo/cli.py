"""`python -m fastnn.demo` / `fastnn-demo`: serve the draw-a-digit page until Ctrl-C."""

import argparse
import signal
import sys
import threading
import webbrowser

from . import models
from .server import DemoServer
from .training import Cancelled


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="fastnn-demo",
        description="Draw a digit and watch a fastnn network classify it; "
        "train your own from the page.",
    )
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="serve this saved fastnn model (default: an MLP trained on first start and cached)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on, 0 for any free one (8000)"
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="do not open the page in a browser"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535, got {args.port}")
    return args


def _log(message):
    print(f"fastnn-demo: {message}", file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(argv)
    try:
        served = models.load_served(args.model) if args.model else models.default_served(log=_log)
    except (OSError, ValueError) as exc:
        _log(f"cannot serve the model: {exc}")
        return 2
    except (Cancelled, KeyboardInterrupt):  # Ctrl-C while the default model trains
        _log("interrupted before serving; nothing was cached")
        return 130
    try:
        server = DemoServer(served, args.host, args.port, quiet=not args.verbose)
    except OSError as exc:
        _log(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return 2
    # SIGTERM stops the server the way Ctrl-C does
    previous = (
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    print(f"fastnn demo: serving {served.description} at {server.url} (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print("fastnn demo: stopped", flush=True)
    return 0
