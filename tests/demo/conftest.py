"""Shared by the demo tests: a private cache directory (XDG_CACHE_HOME) for the whole session,
the default model trained into it once, and a fresh server per test."""

import json
import os
import threading
import urllib.error
import urllib.request

import pytest

from fastnn.demo import models
from fastnn.demo.server import DemoServer


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("xdg-cache")
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def default_served(demo_cache):
    """The real default model, trained on first use as `python -m fastnn.demo` does."""
    return models.default_served(log=lambda message: None)


@pytest.fixture(scope="session")
def mnist_test():
    return models.mnist()[1]


class Client:
    """A running DemoServer and small helpers to talk to it."""

    def __init__(self, server):
        self.server = server
        self.url = server.url.rstrip("/")

    def request(self, method, path, body=None, headers=None, raw=None):
        """(status, parsed JSON) for a request; `raw` bytes are sent as they are."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json", **(headers or {})}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read())

    def post(self, path, body=None, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def get(self, path):
        return self.request("GET", path)


@pytest.fixture
def start_server():
    """start_server(served) -> Client for a DemoServer on a free port, closed after the test."""
    running = []

    def start(served):
        server = DemoServer(served, "127.0.0.1", 0)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        running.append((server, thread))
        return Client(server)

    yield start
    for server, thread in running:
        server.shutdown()
        server.close()
        thread.join(10)


@pytest.fixture
def client(start_server, default_served):
    return start_server(default_served)
