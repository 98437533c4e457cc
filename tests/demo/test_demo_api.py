"""The demo's JSON API: predictions on MNIST test images, activations, the 4xx answers (after
which the server keeps serving), concurrent requests, training runs and their event stream."""

import base64
import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastnn
from fastnn import nn
from fastnn.demo import models
from fastnn.demo.preprocess import mnist_style

# A run small enough for a test: 2 epochs over 5,000 images.
QUICK = {"hidden": [32], "epochs": 2, "limit": 5000, "batch_size": 100}


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_predicts_mnist_test_images(client, default_served, mnist_test):
    x, y = mnist_test
    images = x[:200] / np.float32(255)
    expected = default_served.model.predict(images)
    labels = []
    for k, image in enumerate(images):
        body = image.tolist() if k % 2 else image.reshape(-1).tolist()  # 28x28 and 784 forms
        status, result = client.post("/api/predict", {"image": body})
        assert status == 200, result
        assert len(result["probabilities"]) == 10
        assert abs(sum(result["probabilities"]) - 1) < 1e-4
        assert result["label"] == int(np.argmax(result["probabilities"]))
        labels.append(result["label"])
    assert labels == expected.tolist()  # exactly what fastnn's predict says
    assert np.mean(np.array(labels) == y[:200]) >= 0.95


def test_mlp_activations_are_the_hidden_layers(client, default_served, mnist_test):
    image = mnist_test[0][0] / np.float32(255)
    status, result = client.post("/api/predict", {"image": image.tolist()})
    assert status == 200
    layers = result["activations"]["layers"]
    assert result["activations"]["kind"] == "mlp"
    assert [layer["shape"] for layer in layers] == [[h] for h in models.DEFAULT_RECIPE["hidden"]]
    assert all(layer["kind"] == "dense" and "ReLU" in layer["name"] for layer in layers)
    assert all(min(layer["values"]) >= 0 and max(layer["values"]) > 0 for layer in layers)
    # the NumPy walk through the weights gives the model's own probabilities
    np.testing.assert_allclose(
        _softmax(default_served.logits(image)), result["probabilities"], atol=1e-4
    )


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory):
    fastnn.seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(6 * 6 * 6, 10),
    )
    path = tmp_path_factory.mktemp("models") / "cnn.npz"
    model.save(path)
    return path


def test_cnn_model_shows_feature_maps(start_server, cnn_path, mnist_test):
    served = models.load_served(cnn_path)
    client = start_server(served)
    images = mnist_test[0][:5] / np.float32(255)
    for image in images:
        status, result = client.post("/api/predict", {"image": image.tolist()})
        assert status == 200, result
        layers = result["activations"]["layers"]
        assert result["activations"]["kind"] == "cnn"
        assert [(layer["kind"], layer["shape"]) for layer in layers] == [
            ("conv", [4, 24, 24]),
            ("conv", [6, 12, 12]),
        ]
        assert len(layers[1]["values"]) == 6 * 12 * 12
        assert max(abs(v) for v in layers[1]["values"]) <= 1  # after the Tanh
        np.testing.assert_allclose(
            result["probabilities"], served.model.predict_proba(image[None])[0], atol=1e-5
        )
        np.testing.assert_allclose(
            _softmax(served.logits(image)), result["probabilities"], atol=1e-4
        )


def test_model_without_hidden_layers_and_784_inputs(start_server, tmp_path, mnist_test):
    fastnn.seed(0)
    path = tmp_path / "linear.npz"
    nn.Sequential(nn.Linear(784, 10)).save(path)  # takes 784 features, no Flatten
    client = start_server(models.load_served(path))
    status, result = client.post("/api/predict", {"image": mnist_test[0][0].tolist()})
    assert status == 400  # uint8 values are not in [0, 1]
    status, result = client.post("/api/predict", {"image": (mnist_test[0][0] / 255).tolist()})
    assert status == 200 and result["activations"]["layers"] == []


def test_models_that_are_not_digit_classifiers_are_refused(tmp_path):
    path = tmp_path / "five.npz"
    nn.Sequential(nn.Flatten(), nn.Linear(784, 5)).save(path)
    with pytest.raises(ValueError, match="10 scores"):
        models.load_served(path)
    nn.Sequential(nn.Linear(100, 10)).save(path)
    with pytest.raises(ValueError, match="28x28"):
        models.load_served(path)


def test_drawing_is_preprocessed_and_returned(client, default_served, mnist_test):
    x, y = mnist_test
    digit = x[1] / 255.0
    big = np.kron(digit, np.ones((10, 10)))  # the digit drawn 10x larger on a 280x280 canvas
    payload = {
        "width": 280,
        "height": 280,
        "data": base64.b64encode(np.round(big * 255).astype(np.uint8).tobytes()).decode(),
    }
    status, result = client.post("/api/predict", {"drawing": payload})
    assert status == 200, result
    np.testing.assert_allclose(result["input"], mnist_style(big), atol=1e-3)
    assert result["label"] == y[1]
    status, as_list = client.post("/api/predict", {"drawing": digit.tolist(), "activations": False})
    assert status == 200 and "activations" not in as_list
    assert as_list["label"] == y[1]


BAD_PREDICTIONS = [
    ("not JSON", b'{"image": [', 400, "not valid JSON"),
    ("not an object", b"[1, 2, 3]", 400, "JSON object"),
    ("no image", b"{}", 400, "exactly one"),
    (
        "image and drawing",
        json.dumps({"image": [0] * 784, "drawing": [[0]]}).encode(),
        400,
        "exactly one",
    ),
    ("unknown field", json.dumps({"image": [0] * 784, "colour": 1}).encode(), 400, "unknown"),
    ("783 numbers", json.dumps({"image": [0] * 783}).encode(), 400, "784 numbers"),
    ("27 rows", json.dumps({"image": [[0] * 28] * 27}).encode(), 400, "784 numbers"),
    ("ragged rows", json.dumps({"image": [[0] * 28] * 27 + [[0] * 27]}).encode(), 400, "28 rows"),
    ("3-D", json.dumps({"image": [[[0] * 28] * 28]}).encode(), 400, "28 rows"),
    ("strings", json.dumps({"image": ["0.5"] * 784}).encode(), 400, "numbers"),
    ("booleans", json.dumps({"image": [True] * 784}).encode(), 400, "numbers"),
    ("nulls", json.dumps({"image": [None] * 784}).encode(), 400, "numbers"),
    ("NaN", ('{"image": [NaN' + ", 0" * 783 + "]}").encode(), 400, "finite"),
    ("above 1", json.dumps({"image": [1.5] + [0] * 783}).encode(), 400, "[0, 1]"),
    ("negative", json.dumps({"image": [-0.1] + [0] * 783}).encode(), 400, "[0, 1]"),
    ("image a number", b'{"image": 7}', 400, "must be a list"),
    (
        "activations not bool",
        json.dumps({"image": [0] * 784, "activations": 1}).encode(),
        400,
        "true or false",
    ),
    ("deep nesting", b'{"image": ' + b"[" * 100000 + b"]" * 100000 + b"}", 400, "deeply"),
    (
        "bad base64",
        json.dumps({"drawing": {"width": 2, "height": 2, "data": "!!"}}).encode(),
        400,
        "base64",
    ),
    (
        "drawing size mismatch",
        json.dumps({"drawing": {"width": 3, "height": 2, "data": "AAAA"}}).encode(),
        400,
        "6 bytes",
    ),
    (
        "drawing too large",
        json.dumps({"drawing": {"width": 5000, "height": 1, "data": ""}}).encode(),
        400,
        "width",
    ),
    ("drawing ragged", json.dumps({"drawing": [[0, 0], [0]]}).encode(), 400, "same length"),
    ("drawing a string", json.dumps({"drawing": "digit"}).encode(), 400, "drawing must be"),
]


@pytest.mark.parametrize(
    "body,status,message",
    [case[1:] for case in BAD_PREDICTIONS],
    ids=[case[0] for case in BAD_PREDICTIONS],
)
def test_bad_predict_requests_get_a_4xx_and_the_server_keeps_serving(client, body, status, message):
    got, result = client.post("/api/predict", raw=body)
    assert got == status
    assert message in result["error"]
    got, result = client.post("/api/predict", {"image": [0.0] * 784})
    assert got == 200 and 0 <= result["label"] <= 9


def test_protocol_errors(client):
    status, result = client.post(
        "/api/predict", {"image": [0] * 784}, headers={"Content-Type": "text/plain"}
    )
    assert status == 415 and "application/json" in result["error"]
    status, result = client.post("/api/predict", raw=b" " * (2 << 20))
    assert status == 413 and "limit" in result["error"]
    assert client.get("/api/nothing")[0] == 404
    assert client.get("/static/../server.py")[0] == 404
    assert client.get("/api/predict")[0] == 405
    assert client.post("/api/model", {})[0] == 405
    # no Content-Length, and a body shorter than the Content-Length says
    host, port = client.server.server_address[:2]
    for headers, body, expected in (
        ({"Content-Type": "application/json"}, None, 411),
        ({"Content-Type": "application/json", "Content-Length": "100"}, b"{}", 400),
        ({"Content-Type": "application/json", "Content-Length": "-5"}, b"", 400),
    ):
        connection = http.client.HTTPConnection(host, port, timeout=60)
        connection.putrequest("POST", "/api/predict")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        if body:
            connection.send(body)
        if expected == 400 and headers.get("Content-Length") == "100":
            connection.sock.shutdown(1)  # the client gives up half way
        response = connection.getresponse()
        assert response.status == expected
        assert "error" in json.loads(response.read())
        connection.close()
    assert client.post("/api/predict", {"image": [0.0] * 784})[0] == 200


def test_ipv6_loopback(start_server, default_served):
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    from fastnn.demo.server import DemoServer

    try:
        server = DemoServer(default_served, "::1", 0)
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")
    server.server_close()
    assert server.url.startswith("http://[::1]:")


def test_requests_for_other_host_names_are_refused(client):
    status, result = client.request("GET", "/api/model", headers={"Host": "evil.example:80"})
    assert status == 403 and "localhost" in result["error"]
    for host in ("localhost", f"127.0.0.1:{client.server.server_address[1]}", "[::1]:80"):
        assert client.request("GET", "/api/model", headers={"Host": host})[0] == 200


def test_page_and_static_files(client):
    import urllib.request

    with urllib.request.urlopen(client.url + "/") as response:
        page = response.read().decode()
        assert response.headers["Content-Type"].startswith("text/html")
    for needed in (
        '<canvas id="draw"',
        'id="prediction"',
        'id="clear"',
        'id="train"',
        'id="curve"',
        "/static/app.js",
        "/static/style.css",
    ):
        assert needed in page
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        with urllib.request.urlopen(f"{client.url}/static/{name}") as response:
            assert kind in response.headers["Content-Type"] and response.read()


def test_concurrent_predictions_while_training(client, default_served, mnist_test):
    x, _ = mnist_test
    images = x[:64] / np.float32(255)
    expected = default_served.model.predict(images)
    assert client.post("/api/train", dict(QUICK, epochs=3))[0] == 202

    def ask(k):
        status, result = client.post("/api/predict", {"image": images[k % 64].tolist()})
        assert status == 200, result
        assert len(result["activations"]["layers"]) in (1, 2)
        return result["model"], result["label"], expected[k % 64]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(400)))
    old = default_served.version
    for version, label, old_label in answers:
        if version == old:  # a consistent answer from whichever model served the request
            assert label == old_label
    client.server.hub.close()


def _events(client, until, timeout=120):
    """Events from the stream until one of type `until` (the whole run's list)."""
    host, port = client.server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    connection.request("GET", "/api/train/events")
    response = connection.getresponse()
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    events = []
    try:
        while True:
            line = response.readline()
            assert line, "the stream ended before the run did"
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
                if events[-1]["type"] in until:
                    return events
    finally:
        connection.close()


def test_training_streams_progress_and_swaps_the_model(client, default_served, mnist_test):
    status, started = client.post("/api/train", QUICK)
    assert status == 202 and started["recipe"]["hidden"] == [32]
    events = _events(client, {"done", "error", "cancelled"})
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done", events[-1]
    steps = [e for e in events if e["type"] == "step"]
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert len(steps) == 2 * 50  # every step of 50 per epoch, each reported
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert 0.8 < epochs[-1]["val_accuracy"] == events[-1]["test_accuracy"]
    info = client.get("/api/model")[1]
    assert info["version"] == events[-1]["model"]["version"] != default_served.version
    assert info["layers"][1] == "Linear(784, 32)"
    status, result = client.post("/api/predict", {"image": (mnist_test[0][0] / 255).tolist()})
    assert result["model"] == info["version"]
    assert [layer["shape"] for layer in result["activations"]["layers"]] == [[32]]
    # a second stream, opened later (another tab), replays the same run
    assert _events(client, {"done"}) == events


def test_one_run_at_a_time_and_cancel(client, default_served):
    assert client.post("/api/train/cancel", {})[0] == 409
    status, _ = client.post("/api/train", dict(QUICK, epochs=50, limit=60000, batch_size=8))
    assert status == 202
    status, result = client.post("/api/train", QUICK)
    assert status == 409 and "already" in result["error"]
    assert client.post("/api/train/cancel", {})[0] == 200
    events = _events(client, {"done", "error", "cancelled"})
    assert events[-1]["type"] == "cancelled"
    assert client.get("/api/model")[1]["version"] == default_served.version
    status, _ = client.post("/api/train", dict(QUICK, epochs=1))  # free again
    assert status == 202
    assert _events(client, {"done", "error", "cancelled"})[-1]["type"] == "done"


def test_a_failed_run_reports_its_error_and_keeps_the_model(client, default_served, monkeypatch):
    from fastnn.demo import training

    def diverge(recipe, log=None, emit=None, cancel=None):
        raise fastnn.NonFiniteLossError("loss became nan at epoch 1, step 3")

    monkeypatch.setattr(training, "train_recipe", diverge)
    assert client.post("/api/train", QUICK)[0] == 202
    events = _events(client, {"done", "error", "cancelled"})
    assert events[-1] == {
        "type": "error",
        "error": "NonFiniteLossError: loss became nan at epoch 1, step 3",
    }
    assert client.get("/api/model")[1]["version"] == default_served.version


@pytest.mark.parametrize(
    "params,message",
    [
        ({"hidden": [10] * 5}, "hidden"),
        ({"hidden": [0]}, "hidden"),
        ({"hidden": "64"}, "hidden"),
        ({"hidden": [True]}, "hidden"),
        ({"hidden": [5000]}, "hidden"),
        ({"activation": "swish"}, "activation"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"lr": 0}, "lr"),
        ({"lr": "0.1"}, "lr"),
        ({"lr": 11}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"limit": 70000}, "limit"),
        ({"momentum": 0.9}, "unknown"),
        ([], "JSON object"),
    ],
)
def test_bad_training_parameters(client, params, message):
    status, result = client.post("/api/train", params)
    assert status == 400 and message in result["error"]
    assert not client.server.hub.running


def test_closing_ends_streams_and_runs(client):
    assert client.post("/api/train", dict(QUICK, epochs=50, limit=60000, batch_size=8))[0] == 202
    host, port = client.server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    connection.request("GET", "/api/train/events")
    response = connection.getresponse()
    assert response.readline().startswith(b"data: ")  # the run's start event
    client.server.hub.close()  # what DemoServer.close (Ctrl-C) does before closing the socket
    response.read()  # returns once the server ends the stream (the timeout would raise)
    connection.close()
    assert not client.server.hub.running
