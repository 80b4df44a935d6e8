"""The web app's HTTP API, run in-process: the answers of label_image, every bad request refused
in one line with the next one answered, the token, the security headers, nothing on disk."""

from __future__ import annotations

import json
import os
import tempfile
import warnings

import pytest
from PIL import Image

from retrain.cli import label_image
from tests.conftest import run_cli
from tests.serve.conftest import image_bytes, lesion_image, photo_image

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's note that its client moves to httpx2
    from starlette.testclient import TestClient

pytestmark = pytest.mark.slow  # the models are trained once per session


@pytest.fixture(scope="module")
def app(lesion_models):
    """The app as several workers of a server start it (serve's factory), so answers word things as serve's do."""
    from retrain.cli.serve_command import app_from_environment

    graphs = os.pathsep.join(str(lesion_models / name) for name in ("lesions.pb", "with_metadata.pb", "lesions.tflite"))
    with pytest.MonkeyPatch.context() as patched:
        patched.setenv("RETRAIN_SERVE_GRAPHS", graphs)
        patched.setenv("RETRAIN_SERVE_MAX_UPLOAD_MB", "4")
        return app_from_environment()


def test_answers_name_flags_as_label_image_json_does_not_library_fields():
    from retrain.cli.serve_command import _in_flags

    worded = _in_flags('{"no_operating_point": "the model was trained without DecisionConfig.operating_points"}')
    assert "--operating_point" in worded and "DecisionConfig" not in worded


@pytest.fixture
def client(app):
    with TestClient(app) as client:
        yield client


def _post(client, content: bytes, name: str = "mole.jpg", **fields):
    return client.post("/api/classify", files={"image": (name, content, "image/jpeg")}, data=fields)


def _good(client, **fields):
    answer = _post(client, image_bytes(lesion_image("malignant", 9001)), **fields)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["label"] == "malignant"
    return answer.json()


def test_classify_answers_label_image_json_for_the_same_image(client, lesion_models, tmp_path):
    image = tmp_path / "mole.jpg"
    lesion_image("malignant", 9001).save(image)
    printed = run_cli(label_image, ["--graph", lesion_models / "lesions.pb", "--image", image, "--json",
                                    "--heatmap", tmp_path / "where.png"])
    assert printed.exit_code == 0, printed.output
    expected = json.loads(printed.stdout)
    answer = _post(client, image.read_bytes(), heatmap="1").json()
    assert answer["image"] == "mole.jpg" and expected["image"] == str(image)
    assert answer["heatmap"]["grid"] == expected["heatmap"]["grid"]
    assert answer["heatmap"]["png"].startswith("data:image/png;base64,") and answer["heatmap"]["file"] is None
    for key in ("image", "heatmap"):
        del answer[key], expected[key]
    assert answer.pop("model_name") == "lesions.pb"
    lines = answer.pop("lines")
    assert answer == expected
    assert lines["decisions"][0].startswith("Decision: malignant ") and lines["ood"] == ""


def test_a_photo_of_something_else_is_flagged_and_its_decision_set_aside(client):
    answer = _post(client, image_bytes(photo_image()), name="portrait.jpg").json()
    assert answer["ood"]["level"] == "not_of_kind"
    assert answer["lines"]["ood"].startswith("warning: this image is not of the kind the model was made for")
    assert [d["reliable"] for d in answer["decisions"]] == [False]


def test_models_lists_each_model_with_its_card_and_inputs(client):
    models = {m["name"]: m for m in client.get("/api/models").json()["models"]}
    assert list(models) == ["lesions.pb", "with_metadata.pb", "lesions.tflite"]
    assert models["lesions.pb"]["heatmap"] and not models["lesions.tflite"]["heatmap"]
    assert models["lesions.pb"]["patient_metadata"] is None
    assert [c["name"] for c in models["with_metadata.pb"]["patient_metadata"]] == ["age", "sex"]
    titles = [s["title"] for s in models["lesions.pb"]["model_card_sections"]]
    assert titles and models["lesions.pb"]["model_card"]["labels"] == ["benign", "malignant"]
    assert client.get("/healthz").json() == {"status": "ok", "models": 3}


def test_the_chosen_model_and_its_patient_metadata_are_used(client):
    with_age = _good(client, model="with_metadata.pb", age="70", sex="male")
    assert with_age["model_name"] == "with_metadata.pb" and with_age["lines"]["warnings"] == []
    without = _good(client, model="with_metadata.pb")
    assert "every value counts as missing" in without["lines"]["warnings"][0]
    tflite = _good(client, model="lesions.tflite", heatmap="1")
    assert "heatmap" not in tflite and "no class activation maps" in tflite["heatmap_error"]


def _png(width: int, height: int) -> bytes:
    return image_bytes(Image.new("RGB", (width, height), (200, 150, 120)), "PNG")


BAD_REQUESTS = {
    "empty body": (lambda c: c.post("/api/classify", content=b"",
                                    headers={"content-type": "multipart/form-data; boundary=x"}), 400, "empty request"),
    "not multipart": (lambda c: c.post("/api/classify", content=b"abc"), 400, "multipart/form-data"),
    "no image field": (lambda c: c.post("/api/classify", files={"picture": ("a.jpg", b"abc")}), 400, "unknown field"),
    "image as text": (lambda c: c.post("/api/classify", files={"image": (None, "abc")}), 400,
                      "the field 'image' is text, not a file"),
    "empty file": (lambda c: _post(c, b""), 400, "mole.jpg: empty file"),
    "text file": (lambda c: _post(c, b"just some notes\n" * 50, name="notes.jpg"), 400,
                  "notes.jpg: not an image, or a format that cannot be read"),
    "truncated JPEG": (lambda c: _post(c, image_bytes(lesion_image("benign", 1))[:1500]), 400,
                       "mole.jpg: corrupt or truncated image"),
    "1x1 PNG": (lambda c: _post(c, _png(1, 1), name="dot.png"), 400, "dot.png: image is too small: 1x1 pixels"),
    "100-megapixel PNG": (lambda c: _post(c, _png(10_000, 10_000), name="huge.png"), 400,
                          "huge.png: image is too large: 10000x10000 pixels"),
    "over the upload limit": (lambda c: _post(c, os.urandom(5 * 1024 * 1024)), 413, "the limit is 4 MB"),
    "unknown model": (lambda c: _post(c, image_bytes(lesion_image("benign", 1)), model="nope.pb"), 400,
                      "model 'nope.pb': not served here (served: lesions.pb, with_metadata.pb, lesions.tflite)"),
    "bad age": (lambda c: _post(c, image_bytes(lesion_image("benign", 1)), model="with_metadata.pb", age="old"), 400,
                "'old' is not a number"),
    "metadata for a model without it": (lambda c: _post(c, image_bytes(lesion_image("benign", 1)), age="50"), 400,
                                        "unknown field 'age'"),
    "bad top_k": (lambda c: _post(c, image_bytes(lesion_image("benign", 1)), top_k="0"), 400, "top_k '0'"),
    "GET on classify": (lambda c: c.get("/api/classify"), 405, "method not allowed"),
    "no such page": (lambda c: c.get("/etc/passwd"), 404, "no such page"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_request_gets_one_line_of_error_and_the_next_request_is_answered(client, case):
    send, status, words = BAD_REQUESTS[case]
    answer = send(client)
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert list(body) == ["error"] and "\n" not in body["error"] and words in body["error"]
    assert "Traceback" not in body["error"] and "Classifier." not in body["error"]
    _good(client)


def test_with_a_token_every_request_must_carry_it(lesion_models):
    from retrain.api import load, web_app

    app = web_app([load(lesion_models / "lesions.tflite")], token="s3cret")
    with TestClient(app) as client:
        for path in ("/", "/app.js", "/healthz", "/api/models"):
            refused = client.get(path)
            assert refused.status_code == 401 and "token" in refused.json()["error"], path
        assert _post(client, image_bytes(lesion_image("benign", 1))).status_code == 401
        assert client.get("/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/healthz", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/?token=wrong").status_code == 401
        opened = client.get("/?token=s3cret", follow_redirects=False)  # the page: a cookie, the token out of the address
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        assert "httponly" in opened.headers["set-cookie"].lower()
        assert client.get("/").status_code == 200  # the client keeps the cookie, as a browser does
        assert _post(client, image_bytes(lesion_image("benign", 1))).status_code == 200


def test_every_answer_carries_a_policy_that_allows_only_the_page_s_own_scripts(client):
    for answer in (client.get("/"), client.get("/app.js"), client.get("/api/models"), client.get("/nope"),
                   _post(client, b"")):
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and answer.headers["x-content-type-options"] == "nosniff"


def test_the_page_loads_nothing_from_elsewhere_and_runs_no_inline_script(client):
    page = client.get("/").text
    assert "http://" not in page and "https://" not in page and "//" not in page.replace("<!doctype", "")
    assert '<script src="/app.js" defer></script>' in page and page.count("<script") == 1
    assert 'name="viewport"' in page and 'capture="environment"' in page
    assert "Decision support, not a diagnosis" in page
    for name in ("/app.js", "/style.css"):
        assert "://" not in client.get(name).text, name


def test_nothing_is_written_to_disk_for_an_upload(app, tmp_path, monkeypatch):
    """A 2 MB upload (more than the multipart parser keeps in memory by default) and its
    heatmap: no file is opened for writing, no temporary file made (Linux's are unnamed, so
    they are caught where they are made), and the working and temporary folders stay empty."""
    import builtins

    work, temporary = tmp_path / "cwd", tmp_path / "tmp"
    work.mkdir()
    temporary.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    written = []
    real_open = builtins.open

    def watched_open(file, mode="r", *args, **kwargs):
        if any(letter in mode for letter in "wax+"):
            written.append(file)
        return real_open(file, mode, *args, **kwargs)

    def refused(name):
        def make(*args, **kwargs):
            written.append(name)
            raise OSError(f"{name} called")
        return make

    monkeypatch.setattr(builtins, "open", watched_open)
    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refused(name))
    big = lesion_image("malignant", 9001, size=900)
    content = image_bytes(big, "PNG")
    assert len(content) > 1024 * 1024
    with TestClient(app) as client:
        answer = _post(client, content, name="big.png", heatmap="1")
    assert answer.status_code == 200, answer.text
    assert answer.json()["heatmap"]["png"]
    assert written == []
    assert list(work.iterdir()) == [] and list(temporary.iterdir()) == []
