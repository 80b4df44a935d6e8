"""`serve` as a user runs it: flag mistakes in one line before any loading, the warning for a
server on the network, and a real server under several concurrent clients."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from retrain.cli import serve
from tests.conftest import run_cli
from tests.serve.conftest import image_bytes, lesion_image, photo_image, start_server, stop_server


def _one_error_line(result, words: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr


def test_a_missing_model_is_one_line_before_anything_is_loaded(tmp_path, monkeypatch):
    monkeypatch.setattr("retrain.api.classification.load", lambda *a, **k: pytest.fail("loaded"))
    _one_error_line(run_cli(serve, ["--graph", tmp_path / "nope.pb"]), f"--graph {tmp_path / 'nope.pb'}: no such file")


@pytest.mark.parametrize("flags, words", [
    (["--port", "70000"], "--port 70000: give a port from 1 to 65535"),
    (["--max_upload_mb", "0"], "--max_upload_mb must be above 0, got 0"),
    (["--token", " "], "--token is empty"),
    (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: not an address of this machine"),
])
def test_a_bad_flag_is_one_line(tmp_path, flags, words):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not loaded")
    _one_error_line(run_cli(serve, ["--graph", model, *flags]), words)


def test_a_port_in_use_is_one_line(tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not loaded")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _one_error_line(run_cli(serve, ["--graph", model, "--port", port]), f"--port {port} on 127.0.0.1: cannot listen")


def test_a_damaged_model_is_one_line(tmp_path):
    model = tmp_path / "model.tflite"
    model.write_bytes(b"not a model")
    result = run_cli(serve, ["--graph", model])
    assert result.exit_code != 0 and result.stderr.strip().startswith("error: --graph"), result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("host, token, warned", [("0.0.0.0", None, True), ("0.0.0.0", "s3cret", False),
                                                 ("127.0.0.1", None, False)])
def test_serving_the_network_without_a_token_is_warned_of(lesion_models, monkeypatch, host, token, warned):
    ran = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **options: ran.update(options))
    result = run_cli(serve, ["--graph", lesion_models / "lesions.tflite", "--host", host, "--port", 0,
                             *(["--token", token] if token else [])])
    assert result.exit_code == 0, result.output
    assert ran["host"] == host and ran["access_log"] is False
    assert ("serves the network with no authentication" in result.stderr) == warned, result.stderr


@pytest.mark.slow
def test_a_real_server_answers_concurrent_clients_correctly_and_logs_no_names(server):
    """16 requests from 4 clients at once, on both formats, lesions and a photo; the answers are
    right, and the log holds counts and timings, not the images' names."""
    images = {"mole_benign_7.jpg": ("benign", image_bytes(lesion_image("benign", 7007))),
              "mole_malignant_8.jpg": ("malignant", image_bytes(lesion_image("malignant", 8008))),
              "portrait_of_someone.jpg": (None, image_bytes(photo_image()))}
    jobs = [(name, model) for name in images for model in ("lesions.pb", "lesions.tflite")] * 3
    jobs = jobs[:16]

    def ask(job):
        name, model = job
        with httpx.Client(base_url=server.url, timeout=120) as client:
            return job, client.post("/api/classify", files={"image": (name, images[name][1], "image/jpeg")},
                                    data={"model": model})

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, jobs))
    for (name, model), answer in answers:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        label = images[name][0]
        assert body["model_name"] == model
        if label is None:
            assert body["ood"]["level"] == "not_of_kind"
        else:
            assert body["predictions"][0]["label"] == label and body["ood"]["level"] != "not_of_kind"
    log = server.log.read_text()
    assert "POST /api/classify 200" in log
    assert not any(name in log for name in images)


@pytest.mark.slow
def test_ctrl_c_stops_the_server_cleanly(lesion_models, tmp_path):
    running = start_server([lesion_models / "lesions.tflite"], tmp_path / "serve.log")
    assert stop_server(running) == 0
    assert "Traceback" not in running.log.read_text()
