"""The web API in-process (Starlette's test client): generation and editing on the built-in digits model, the
per-scale stream, the command lines it prints (run here, they draw the same pixels), the line of jobs, and
every bad request's 4xx with the server answering the next one."""

import asyncio
import base64
import io
import json
import re
import shlex
import threading

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the web extra (pip install 'nextscale[web]') is not installed")
from starlette.testclient import TestClient  # noqa: E402

from nextscale.cli import main  # noqa: E402
from nextscale.web import Session, create_app  # noqa: E402
from nextscale.web.inputs import MAX_UPLOAD_BYTES  # noqa: E402
from nextscale.web.jobs import Line  # noqa: E402
from nextscale.weights import load_model  # noqa: E402


@pytest.fixture(scope="module")
def session():
    vae, var = load_model("digits")
    return Session(vae, var, ["--model", "digits"], "digits")


@pytest.fixture(scope="module")
def client(session):
    with TestClient(create_app(session)) as client:
        yield client


def pixels(base64_png: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(base64_png)))
    assert image.format == "PNG"
    return np.asarray(image)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run_command(command: str, **replace: str) -> None:
    """Runs a command line the server printed, with some of its paths replaced."""
    argv = shlex.split(command)
    assert argv[0] == "nextscale"
    for flag, value in replace.items():
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:  # --flag=value, for file names that may start with a dash
            argv[next(i for i, a in enumerate(argv) if a.startswith(flag + "="))] = f"{flag}={value}"
    assert main(argv[1:]) == 0


def stream(client, path: str, body: dict) -> list[dict]:
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in response.iter_lines() if line]


def test_page_info_and_examples(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for element in ('id="generate-form"', 'id="edit-form"', 'id="pyramid"', 'src="/static/app.js"'):
        assert element in page.text
    assert "/stream`" in client.get("/static/app.js").text
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    info = client.get("/api/info").json()
    assert info["resolution"] == 32 and info["scales"] == [1, 2, 3, 4, 6, 8]
    assert info["classes"] == [str(d) for d in range(10)] and info["max_images"] == 16
    assert info["examples"] == [f"digit-{d}" for d in range(10)]
    example = Image.open(io.BytesIO(client.get("/api/examples/digit-4.png").content))
    assert example.format == "PNG" and example.size == (32, 32)


@pytest.mark.parametrize("label", [3, None], ids=["class", "unconditional"])
def test_sample_draws_what_its_command_line_draws(client, tmp_path, label):
    body = {"class": label, "n": 3, "seed": 7, "cfg": 2.5, "top_k": 50, "top_p": 0.9}
    answer = client.post("/api/sample", json=body).json()
    images = [pixels(p) for p in answer["images"]]
    assert len(images) == 3 and all(image.shape == (32, 32, 3) for image in images)
    assert answer["labels"] == [3] * 3 if label == 3 else [10] * 3  # 10: the null class
    which = "--class 3" if label == 3 else "--unconditional"
    assert answer["command"] == (
        f"nextscale sample --model digits {which} --n 3 --seed 7 --cfg 2.5 --top-k 50 --top-p 0.9 --out samples"
    )
    run_command(answer["command"], **{"--out": str(tmp_path)})
    for i, image in enumerate(images):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{i:06d}.png")), image)


def test_the_stream_sends_every_scale_then_the_result(client):
    events = stream(client, "/api/sample/stream", {"class": "7", "n": "2", "seed": "3"})
    kinds = [e["event"] for e in events]
    assert kinds == ["started", "scales", *["scale"] * 6, "done"]
    assert events[1]["scales"] == [1, 2, 3, 4, 6, 8] and events[1]["resolution"] == 32
    scales = events[2:-1]
    assert [e["index"] for e in scales] == list(range(6)) and [e["side"] for e in scales] == [1, 2, 3, 4, 6, 8]
    for event in scales:
        assert len(event["images"]) == 2 and all(pixels(p).shape == (32, 32, 3) for p in event["images"])
    coarse, last = pixels(scales[0]["images"][0]), [pixels(p) for p in scales[-1]["images"]]
    final = [pixels(p) for p in events[-1]["images"]]
    assert all(np.array_equal(a, b) for a, b in zip(last, final))  # the last scale is the result
    assert not np.array_equal(coarse, final[0])  # and the 1×1 scale is not


@pytest.mark.parametrize("region", ["box", "mask"])
def test_edit_does_what_its_command_line_does(client, tmp_path, region, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the command names the files as the page uploaded them
    example = client.get("/api/examples/digit-4.png").content
    (tmp_path / "-digit.png").write_bytes(example)
    body = {"image": b64(example), "filename": "-digit.png", "seed": 2, "class": 4}
    if region == "box":
        body["box"] = [0.25, 0.3, 0.6, 0.75]
    else:
        mask = Image.new("L", (96, 64), 0)  # not square: cropped to its centre, as the image is
        mask.paste(255, (0, 0, 96, 24))
        mask.save(tmp_path / "my mask.png")
        body.update(mask="data:image/png;base64," + b64(png_bytes(mask)), mask_filename="my mask.png", mode="outpaint")
    events = stream(client, "/api/edit/stream", body)
    assert [e["event"] for e in events] == ["started", "scales", *["scale"] * 6, "done"]
    result = events[-1]
    assert np.array_equal(pixels(result["input"]), np.asarray(Image.open(tmp_path / "-digit.png").convert("RGB")))
    edited = pixels(result["images"][0])
    assert edited.shape == (32, 32, 3) and not np.array_equal(edited, pixels(result["input"]))
    expected = "--box 0.25,0.3,0.6,0.75" if region == "box" else "'--mask=my mask.png' --outpaint"
    assert f"nextscale edit --model digits --image=-digit.png {expected} --class 4 --seed 2" in result["command"]
    run_command(result["command"].replace("--out edited.png", f"--out {tmp_path / 'out.png'}"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), edited)


def bomb() -> bytes:
    """A 20,000² PNG of a few kilobytes: 400 megapixels if decoded."""
    return png_bytes(Image.new("1", (20_000, 20_000)))


IMAGE = png_bytes(Image.new("RGB", (40, 30), (250, 250, 250)))
EDIT = {"image": b64(IMAGE), "box": [0.2, 0.2, 0.6, 0.6]}
# fmt: off
BAD = {
    "class out of range": ("sample", {"class": 10}, 400, r"class 10 is out of range: this model has classes 0\.\.9"),
    "class negative": ("sample", {"class": -1}, 400, "class -1 is out of range"),
    "class by unknown name": ("sample", {"class": "cat"}, 400, "'cat' is not one of this model's 10 class names"),
    "class not whole": ("sample", {"class": 2.5}, 400, "class must be an integer, got 2.5"),
    "too many images": ("sample", {"n": 17}, 400, r"n must be in \[1, 16\], got 17"),
    "no images": ("sample", {"n": 0}, 400, r"n must be in \[1, 16\], got 0"),
    "seed not a number": ("sample", {"seed": "abc"}, 400, "seed must be an integer, got 'abc'"),
    "seed negative": ("sample", {"seed": -1}, 400, "seed must be in"),
    "seed a list": ("sample", {"seed": [1]}, 400, "seed must be an integer"),
    "cfg not a number": ("sample", {"cfg": "lots"}, 400, "cfg must be a number, got 'lots'"),
    "cfg not finite": ("sample", {"cfg": "nan"}, 400, "cfg must be a finite number"),
    "cfg negative": ("sample", {"cfg": -1}, 400, r"cfg must be in \[0, 100\], got -1"),
    "top-k negative": ("sample", {"top_k": -5}, 400, "top_k must be an integer ≥ 0, got -5"),
    "top-k empty": ("sample", {"top_k": ""}, 400, "top_k must be an integer, got ''"),
    "top-p over 1": ("sample", {"top_p": 1.5}, 400, r"top_p must lie in \[0, 1\], got 1.5"),
    "unknown field": ("sample", {"colour": "red"}, 400, "unknown field 'colour'"),
    "not an image": ("edit", {**EDIT, "image": b64(b"hello, not an image")}, 400, "image is not an image this server reads"),
    "not base64": ("edit", {**EDIT, "image": "@@@"}, 400, "image is not valid base64"),
    "image missing": ("edit", {"box": [0, 0, 1, 1]}, 400, "image must be an image file in base64"),
    "over 10 MB": ("edit", {**EDIT, "image": b64(bytes(MAX_UPLOAD_BYTES + 1))}, 413, "image is 10.0 MB: the limit is 10 MB"),
    "over 4096 px": ("edit", {**EDIT, "image": b64(png_bytes(Image.new("L", (5000, 2))))}, 413, "image is 5000×2 pixels: the limit is 4096"),
    "decompression bomb": ("edit", {**EDIT, "image": b64(bomb())}, 413, "image claims hundreds of megapixels .* limit is 4096"),
    "large but no bomb": ("edit", {**EDIT, "image": b64(png_bytes(Image.new("1", (9000, 5000))))}, 413, "image is 9000×5000 pixels"),
    "mask not an image": ("edit", {"image": EDIT["image"], "mask": b64(b"GIF89a")}, 400, "mask is not an image"),
    "box outside the image": ("edit", {**EDIT, "box": [0.2, 0.2, 1.4, 0.6]}, 400, "reaches outside the image"),
    "box negative": ("edit", {**EDIT, "box": "-0.1,0,0.5,0.5"}, 400, "reaches outside the image"),
    "box empty": ("edit", {**EDIT, "box": [0.5, 0.2, 0.5, 0.6]}, 400, "is empty"),
    "box of three": ("edit", {**EDIT, "box": [0.1, 0.2, 0.3]}, 400, "box must be four numbers"),
    "box of words": ("edit", {**EDIT, "box": ["a", 0, 1, 1]}, 400, r"box\[0\] must be a number"),
    "box and mask": ("edit", {**EDIT, "mask": EDIT["image"]}, 400, "give exactly one of box"),
    "neither box nor mask": ("edit", {"image": EDIT["image"]}, 400, "give exactly one of box"),
    "empty mask": ("edit", {"image": EDIT["image"], "mask": b64(png_bytes(Image.new("L", (8, 8))))}, 400, "the mask is empty"),
    "outpaint everything": ("edit", {**EDIT, "box": [0, 0, 1, 1], "mode": "outpaint"}, 400, "out-painting would generate nothing"),
    "mode unknown": ("edit", {**EDIT, "mode": "repaint"}, 400, "mode must be inpaint or outpaint"),
    "edit class out of range": ("edit", {**EDIT, "class": 12}, 400, "class 12 is out of range"),
    "filename not a string": ("edit", {**EDIT, "filename": {"a": 1}}, 400, "filename must be a file name"),
    "cfg of 400 digits": ("sample", {"cfg": 10**400}, 400, "cfg must be a finite number"),
    "cfg too large": ("sample", {"cfg": 1e300}, 400, r"cfg must be in \[0, 100\]"),
    "box of 400 digits": ("edit", {**EDIT, "box": [10**400, 0, 1, 1]}, 400, r"box\[0\] must be a finite number"),
    "class a boolean": ("sample", {"class": True}, 400, "class must be an integer"),
    "class an object": ("sample", {"class": {"id": 3}}, 400, "class must be an integer"),
}
# fmt: on


@pytest.mark.parametrize("stream_path", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_get_a_4xx_that_names_the_problem(client, case, stream_path):
    kind, body, status, message = BAD[case]
    response = client.post(f"/api/{kind}/stream" if stream_path else f"/api/{kind}", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert re.search(message, response.json()["error"]), response.json()
    assert client.get("/api/info").status_code == 200  # still up


@pytest.mark.parametrize(
    "content, content_type, status, message",
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "must be a JSON object"),
        (b"\xff\xfe", "application/json", 400, "not valid JSON"),
        (b"[" * 100_000, "application/json", 400, "not valid JSON"),
        (b"class=3", "application/x-www-form-urlencoded", 415, "send the fields as JSON"),
        (b" " * (30 * 2**20), "application/json", 413, "over the"),
    ],
    ids=["broken", "list", "binary", "deep", "form", "huge"],
)
def test_bodies_that_are_not_json_fields(client, content, content_type, status, message):
    response = client.post("/api/sample", content=content, headers={"content-type": content_type})
    assert response.status_code == status and message in response.json()["error"]


def test_class_names_and_wrapped_base64(client):
    from nextscale.web.inputs import BadRequest, class_id

    names = ["crane", "goldfish", "crane"]  # ImageNet names two classes "crane"
    assert class_id({"class": "Goldfish"}, names) == 1 and class_id({"class": " 2 "}, names) == 2
    with pytest.raises(BadRequest, match=r"'crane' names 2 classes \(0, 2\): give the id"):
        class_id({"class": "crane"}, names)
    wrapped = "\n".join(EDIT["image"][i : i + 76] for i in range(0, len(EDIT["image"]), 76))  # as `base64` prints
    assert client.post("/api/edit", json={**EDIT, "image": wrapped}).status_code == 200


def test_released_models_get_imagenet_names_offline():
    from types import SimpleNamespace

    from nextscale.weights.classes import model_class_names as class_names

    names = class_names(SimpleNamespace(num_classes=1000))  # from torchvision's weight metadata: no download
    assert len(names) == 1000 and names[1] == "goldfish" and names[207] == "golden retriever"
    assert class_names(SimpleNamespace(num_classes=4)) == ["0", "1", "2", "3"]


def test_the_app_serves_again_after_a_restart(session):
    app = create_app(session)
    for _ in range(2):  # the lifespan closes the line; the next one opens it again
        with TestClient(app) as client:
            assert client.post("/api/sample", json={"class": 1}).status_code == 200


def test_unknown_paths_and_methods(client):
    assert client.get("/api/examples/nope.png").status_code == 404
    assert "digit-0" in client.get("/api/examples/nope.png").json()["error"]
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/api/sample").status_code == 405


def test_a_second_request_waits_its_turn_and_hears_its_place(session, monkeypatch):
    gate, run = threading.Event(), session.run

    def held(request, emit):
        gate.wait(60)
        return run(request, emit)

    monkeypatch.setattr(session, "run", held)
    app = create_app(session)
    with TestClient(app) as client:
        first = {}
        thread = threading.Thread(target=lambda: first.update(events=stream(client, "/api/sample/stream", {})))
        thread.start()
        while len(app.state.line) < 1:
            threading.Event().wait(0.01)

        def open_gate_once_both_wait():
            while len(app.state.line) < 2:
                threading.Event().wait(0.01)
            gate.set()

        opener = threading.Thread(target=open_gate_once_both_wait)
        opener.start()
        second = stream(client, "/api/sample/stream", {"seed": 1})
        thread.join(60)
        opener.join(60)
    assert [e["event"] for e in second[:2]] == ["queued", "started"] and second[0]["position"] == 1
    assert first["events"][0] == {"event": "started"} and first["events"][-1]["event"] == "done"
    assert second[-1]["event"] == "done" and second[-1]["seed"] == 1


def test_jobs_run_one_at_a_time_and_hear_their_place_in_line():
    async def scenario():
        line, release, order = Line(), threading.Event(), []

        def blocking(emit):
            release.wait(10)
            order.append("first")
            return {"who": "first"}

        def quick(name):
            def work(emit):
                order.append(name)
                return {"who": name}

            return work

        first = line.submit(blocking)
        second, third = line.submit(quick("second")), line.submit(quick("third"))
        assert len(line) == 3
        assert await second.events.get() == {"event": "queued", "position": 1}
        assert await third.events.get() == {"event": "queued", "position": 2}
        gone = line.submit(quick("gone"))
        line.cancel(gone)  # a closed tab: dropped from the line, never run
        release.set()
        results = [[e async for e in line.events(job)] for job in (first, second, third)]
        assert results[0] == [{"event": "started"}, {"event": "done", "who": "first"}]
        assert results[1] == [{"event": "started"}, {"event": "done", "who": "second"}]
        assert results[2] == [
            {"event": "queued", "position": 1},
            {"event": "started"},
            {"event": "done", "who": "third"},
        ]
        assert order == ["first", "second", "third"] and len(line) == 0
        line.close()

    asyncio.run(scenario())


def test_a_job_stops_at_its_next_scale_when_nobody_listens_and_errors_reach_the_listener():
    async def scenario():
        line, steps, gone = Line(), [], threading.Event()

        def long_work(emit):
            for step in range(1000):
                steps.append(step)
                emit({"event": "scale", "index": step})
                if step == 0:  # the listener leaves during the first scale, however fast this thread runs
                    gone.wait(10)
            return {}

        job = line.submit(long_work)
        events = line.events(job)
        assert (await anext(events))["event"] == "started"
        await events.aclose()  # the listener goes away
        gone.set()
        while len(line):
            await asyncio.sleep(0.01)
        assert steps in ([0], [0, 1])  # it stopped at the first scale it reached after the listener left

        def broken(emit):
            raise RuntimeError("CUDA out of memory\nmore details")

        failed = [e async for e in line.events(line.submit(broken))]
        assert failed[-1] == {"event": "error", "status": 500, "error": "generation failed: CUDA out of memory"}
        line.close()

    asyncio.run(scenario())


def test_requests_whose_client_leaves_cancel_their_job():
    from starlette.requests import ClientDisconnect

    from nextscale.web.app import JobStream, result_of

    async def scenario():
        line, release = Line(), threading.Event()

        def held(emit):
            release.wait(10)
            emit({"event": "scale", "index": 0})  # the next scale: where a cancelled job stops
            return {}

        class GoneClient:
            async def is_disconnected(self):
                return True

        job = line.submit(held)
        answer = await result_of(line, job, GoneClient())  # the JSON endpoints poll for the client
        assert answer.status_code == 499 and job.cancelled.is_set()

        async def send(message):  # the stream's client is gone: sending fails
            raise OSError("connection reset")

        async def receive():
            await asyncio.sleep(10)

        streamed = line.submit(held)
        with pytest.raises(ClientDisconnect):
            await JobStream(line, streamed)({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
        assert streamed.cancelled.is_set()
        release.set()
        while len(line):
            await asyncio.sleep(0.01)
        line.close()

    asyncio.run(scenario())


def test_serve_without_the_web_extra_says_how_to_get_it(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", "--port", "0"]) == 2
    assert "pip install 'nextscale[web]'" in capsys.readouterr().err


def test_a_taken_port_is_refused_before_the_model_loads(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--model", "no-such-model", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and len(err.strip().splitlines()) == 1


def test_a_model_s_recorded_class_names_are_the_page_s_and_its_commands_draw_the_same(tmp_path):
    from nextscale import save_model
    from tests.helpers import tiny_pair

    vae, var = tiny_pair()
    var.provenance = {"classes": ["1", "10", "11", "2"]}  # numbered folders, in sorted order
    model = save_model(vae, var, tmp_path / "named")
    with TestClient(create_app(Session(*load_model(model), ["--model", str(model)], "named"))) as client:
        assert client.get("/api/info").json()["classes"] == ["1", "10", "11", "2"]
        by_name = client.post("/api/sample", json={"class": "name:2", "seed": 4}).json()
        by_id = client.post("/api/sample", json={"class": "2", "seed": 4}).json()  # the page sends ids as text
        assert by_name["labels"] == [3] and by_id["labels"] == [2]
        assert "--class id:2" in by_id["command"] and "--class 3" in by_name["command"]  # "2" would be ambiguous
        refused = client.post("/api/sample", json={"class": "twelve"})
        assert refused.status_code == 400 and "class 'twelve' is not one of this model's 4 class names" in refused.text
        run_command(by_id["command"], **{"--out": str(tmp_path / "o")})
        assert np.array_equal(np.load(tmp_path / "o" / "samples.npz")["arr_0"][0], pixels(by_id["images"][0]))


def test_an_uploaded_image_s_transparency_is_white_and_a_mask_s_is_kept(client):
    photo = np.zeros((32, 32, 4), np.uint8)
    photo[..., 1], photo[8:24, 8:24, 3] = 160, 255  # a green square on a transparent page
    on_white = np.where(photo[..., 3:] == 255, photo[..., :3], 255).astype(np.uint8)
    strokes = np.zeros((32, 32, 4), np.uint8)
    strokes[8:24, 8:24] = 255  # white strokes on a transparent layer
    opaque = np.where(strokes[..., 3:] == 255, 255, 0).astype(np.uint8)[..., 0]
    results = [
        client.post(
            "/api/edit",
            json={
                "image": b64(png_bytes(Image.fromarray(image))),
                "mask": b64(png_bytes(Image.fromarray(mask))),
                "seed": 1,
            },
        ).json()
        for image, mask in ((photo, strokes), (on_white, opaque))
    ]
    assert results[0]["input"] == results[1]["input"] and results[0]["images"] == results[1]["images"]


# ---- the model picker: every built-in model, plus the one the server started with --------------------------


def fashion_stand_in(folder):
    """A tiny model that records Fashion-MNIST's class names: a stand-in for the built-in fashion model."""
    from dataclasses import replace

    from nextscale import save_model
    from nextscale.data.fashion import FASHION_CLASSES
    from nextscale.transformer import VAR
    from tests.helpers import randomize_, tiny_pair

    vae, tiny = tiny_pair()
    var = randomize_(VAR(replace(tiny.config, num_classes=len(FASHION_CLASSES))), seed=3).eval()
    var.provenance = {"tokenizer": vae.fingerprint(), "classes": list(FASHION_CLASSES)}
    return save_model(vae, var, folder)


@pytest.fixture
def picker(session, tmp_path, monkeypatch):
    """The app as `nextscale serve` makes it (digits first, then every built-in model), with the built-in fashion
    model's entry pointed at a tiny stand-in (its weights are not needed to test the page's side of it)."""
    from nextscale import registry
    from nextscale.web import Models

    monkeypatch.setitem(registry.BUILTIN, "fashion", fashion_stand_in(tmp_path / "fashion"))
    monkeypatch.setitem(registry.BUILTIN_TOKENIZER, "fashion", "fashion")
    app = create_app(Models.with_builtins(session))
    with TestClient(app) as client:
        yield client, app.state.models


def test_info_lists_every_built_in_model_and_loads_each_when_first_named(picker):
    from nextscale.data.fashion import FASHION_CLASSES
    from nextscale.registry import BUILTIN

    client, models = picker
    info = client.get("/api/info").json()
    assert info["models"] == list(BUILTIN) and "fashion" in info["models"] and info["model"] == "digits"
    assert models.loaded == ["digits"]  # nothing else is loaded before a request names it
    fashion = client.get("/api/info", params={"model": "fashion"}).json()
    assert fashion["model"] == "fashion" and fashion["classes"] == list(FASHION_CLASSES)
    assert fashion["scales"] == [1, 2, 3, 4] and fashion["models"] == info["models"]  # the stand-in's scales
    assert fashion["examples"] == [f"fashion-{name}" for name in FASHION_CLASSES]  # its own data's images
    assert models.loaded == ["digits", "fashion"]
    assert client.get("/api/info").json()["model"] == "digits"  # the default stays


def test_switching_models_draws_with_the_named_one_and_its_command_agrees(picker, tmp_path):
    client, _ = picker
    events = stream(client, "/api/sample/stream", {"model": "fashion", "class": "sneaker", "seed": 5, "n": 2})
    assert [e["event"] for e in events] == ["started", "scales", *["scale"] * 4, "done"]  # the stand-in's 4 scales
    done = events[-1]
    assert done["labels"] == [7, 7]
    assert done["command"].startswith("nextscale sample --model fashion --class 7 --n 2 --seed 5")
    run_command(done["command"], **{"--out": str(tmp_path / "fashion")})  # the registry's stand-in, in-process
    for i, image in enumerate(done["images"]):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "fashion" / f"{i:06d}.png")), pixels(image))
    small = client.post("/api/sample", json={"model": "digits-small", "class": 3, "seed": 5}).json()
    digits = client.post("/api/sample", json={"class": 3, "seed": 5}).json()
    assert small["command"].startswith("nextscale sample --model digits-small --class 3")
    assert digits["command"].startswith("nextscale sample --model digits --class 3")
    assert small["images"] != digits["images"]  # another transformer on the same tokenizer
    example = client.get("/api/examples/fashion-sneaker.png").content
    edited = client.post(
        "/api/edit", json={"model": "fashion", "image": b64(example), "box": [0.2, 0.2, 0.8, 0.8], "class": "bag"}
    ).json()
    assert "nextscale edit --model fashion --image=input.png --box 0.2,0.2,0.8,0.8 --class 8" in edited["command"]


@pytest.mark.parametrize("name", ["no-such-model", 3, ["digits"]])
def test_an_unknown_model_is_refused_in_one_line(picker, name):
    client, models = picker
    offered = ", ".join(models.names)
    requests = [
        client.post("/api/sample", json={"model": name}),
        client.post("/api/sample/stream", json={"model": name}),
        client.post("/api/edit", json={**EDIT, "model": name}),
    ]
    if isinstance(name, str):
        requests.append(client.get("/api/info", params={"model": name}))
    for response in requests:
        assert response.status_code == 400, response.text
        message = response.json()["error"]
        assert message == f"unknown model {name!r}; this server offers: {offered}" and "\n" not in message
    assert models.loaded == ["digits"]


def test_a_model_of_the_user_s_own_comes_first_and_the_built_in_ones_follow(tmp_path):
    from nextscale import save_model
    from nextscale.data.fashion import FASHION_CLASSES
    from nextscale.registry import BUILTIN
    from nextscale.web import Models
    from tests.helpers import tiny_pair

    model = str(save_model(*tiny_pair(), tmp_path / "mine"))
    first = Session(*load_model(model), ["--model", model], model)
    with TestClient(create_app(Models.with_builtins(first))) as client:
        info = client.get("/api/info").json()
        assert info["models"] == [model, *BUILTIN] and info["scales"] == [1, 2, 3, 4]
        every = [*(f"digit-{d}" for d in range(10)), *(f"fashion-{name}" for name in FASHION_CLASSES)]
        assert info["examples"] == every  # a model of other classes: every set's
        digits = client.get("/api/info", params={"model": "digits"}).json()
        assert digits["scales"] == [1, 2, 3, 4, 6, 8] and len(digits["classes"]) == 10
        assert digits["examples"] == [f"digit-{d}" for d in range(10)]
        events = stream(client, "/api/sample/stream", {"model": "digits", "class": 1})
        assert [e["event"] for e in events].count("scale") == 6
        assert client.post("/api/sample", json={}).json()["command"].startswith(f"nextscale sample --model {model}")


def test_a_model_loads_once_however_many_requests_name_it_at_once(session):
    from nextscale.errors import NextscaleError
    from nextscale.web import Models
    from nextscale.web.inputs import BadRequest

    calls, gate = [], threading.Event()

    def slow_load():
        calls.append(1)
        gate.wait(10)
        return session

    def broken():
        raise NextscaleError("digits-x/var/model.safetensors is cut short")

    models = Models(session, {"other": slow_load, "broken": broken})
    got = []
    threads = [threading.Thread(target=lambda: got.append(models.get("other"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    while not calls:
        threading.Event().wait(0.01)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and len(got) == 6 and all(s is session for s in got)
    with pytest.raises(BadRequest, match="model broken could not be loaded: digits-x/var/model.safetensors") as e:
        models.get("broken")
    assert e.value.status == 500 and models.loaded == [session.title, "other"]


def test_each_example_set_ships_one_image_per_class_as_the_model_sees_it(client):
    from nextscale.data.examples import shipped_fashion_grey

    grey = shipped_fashion_grey()
    for label, name in enumerate(["t-shirt", "trouser", "pullover", "dress", "coat"]):
        example = np.asarray(Image.open(io.BytesIO(client.get(f"/api/examples/fashion-{name}.png").content)))
        assert example.shape == (32, 32, 3)  # padded with black, as the model was trained
        assert np.array_equal(example[2:30, 2:30, 0], grey[label]) and not example[:2].any()
    assert client.get("/api/info").json()["examples"] == [f"digit-{d}" for d in range(10)]  # the digits model's


def test_a_raster_order_model_samples_on_the_page_and_refuses_edits(tmp_path):
    from dataclasses import replace

    import torch

    from nextscale import save_model
    from nextscale.registry import architecture
    from nextscale.tokenizer import VQVAE
    from nextscale.transformer import RasterAR, RasterConfig

    torch.manual_seed(0)
    vae = VQVAE(replace(architecture("tiny")[0], patch_nums=(4,)))
    vocab = vae.config.vocab_size
    model = RasterAR(RasterConfig(depth=1, embed_dim=16, num_heads=1, num_classes=3, vocab_size=vocab, grid=4))
    path = save_model(vae, model, tmp_path / "raster")
    with TestClient(create_app(Session(*load_model(path), ["--model", str(path)], "raster"))) as client:
        info = client.get("/api/info").json()
        assert info["kind"] == "raster-ar" and info["scales"] == [4]
        events = stream(client, "/api/sample/stream", {"class": "1", "n": "2", "seed": "5"})
        assert [e["event"] for e in events] == ["started", "done"]  # no scales to show on the way
        answer = client.post("/api/sample", json={"class": 1, "n": 2, "seed": 5, "cfg": 2.0}).json()
        run_command(answer["command"], **{"--out": str(tmp_path / "o")})
        drawn = np.load(tmp_path / "o" / "samples.npz")["arr_0"]
        assert all(np.array_equal(drawn[i], pixels(p)) for i, p in enumerate(answer["images"]))
        refused = client.post("/api/edit", json={"image": "x", "box": [0, 0, 0.5, 0.5]})
        assert refused.status_code == 400 and "raster-order model cannot" in refused.text
