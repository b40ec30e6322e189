"""Hostile requests to the /hyperlora/v1 routes: always a 4xx in the one error shape, never a 500.

The fuzzers (hypothesis, bounded examples) found the cases pinned in the tests above them.
"""

from __future__ import annotations

import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperlora_ext.webui import api
from tests.encoders._photos import count_decoded_alive
from tests.webui.tiny_host import FACE, NO_FACE, make_client, point_webui_at, tiny_models

SHAPE = {"error", "detail", "field"}


@pytest.fixture
def client(webui, tmp_path_factory, monkeypatch):
    point_webui_at(*tiny_models(tmp_path_factory), monkeypatch)
    return make_client()


def error_of(response, status: int, field: str | None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == SHAPE and body["field"] == field, body
    return body


def test_deeply_nested_bodies_are_a_400(client):
    deep = "[" * 100_000 + "]" * 100_000
    for route in ("detect", "encode"):
        body = error_of(client.post(f"/hyperlora/v1/{route}", content=deep), 400, None)
        assert "nested too deeply" in body["detail"]


@pytest.mark.parametrize(
    ("request_body", "status", "field"),
    [
        ({"images": [FACE], "face_index": "²", "face": "index"}, 422, "face_index"),
        ({"images": [FACE], "weight": 1}, 422, "weight"),
        ({"images": [FACE], "model": "m" * 300}, 400, "model"),
        ({"images": [FACE], "model": "../tiny"}, 400, "model"),
        ({"images": [FACE], "model": "absent"}, 404, "model"),
        ({"images": [NO_FACE]}, 422, "images"),
        ({"images": ["!!"]}, 400, "images"),
        ({"images": [FACE], "save_as": "CON"}, 400, "save_as"),
        ({"images": [FACE], "save_as": "x.hyperlora"}, 400, "save_as"),
    ],
)
def test_every_encode_error_names_its_field(client, request_body, status, field):
    error_of(client.post("/hyperlora/v1/encode", json=request_body), status, field)


def test_weight_overflow_and_superscripts_are_argument_errors(client):
    body = {"images": [FACE], "face_index": "²", "face": "index"}
    response = client.post("/hyperlora/v1/encode", json=body)
    assert "whole number" in error_of(response, 422, "face_index")["detail"]


def test_identity_route_errors_name_their_field(client):
    error_of(client.get("/hyperlora/v1/identities/nobody"), 404, "name")
    error_of(client.delete("/hyperlora/v1/identities/nul.txt"), 400, "name")
    error_of(client.get("/hyperlora/v1/identities/" + "n" * 300), 400, "name")
    error_of(client.get("/hyperlora/v1/identities/x?preview=perhaps"), 422, "preview")
    client.post("/hyperlora/v1/encode", json={"images": [FACE], "save_as": "bob"})
    response = client.post("/hyperlora/v1/encode", json={"images": [FACE], "save_as": "bob"})
    error_of(response, 409, "save_as")


def test_a_bug_is_a_500_in_the_same_shape(client, monkeypatch):
    monkeypatch.setattr(api, "_status", lambda backend: 1 / 0)
    body = error_of(client.get("/hyperlora/v1/status"), 500, None)
    assert body["error"] == "InternalError" and "please report it" in body["detail"]


def test_detect_decodes_one_photo_at_a_time_across_requests(client, monkeypatch):
    """Concurrent /detect requests wait for the queue with their compressed photos only."""
    alive_at_decode = count_decoded_alive(monkeypatch)
    start = threading.Barrier(2)
    statuses = []

    def request():
        start.wait()
        response = client.post("/hyperlora/v1/detect", json={"images": [FACE] * 3})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200, 200]
    assert len(alive_at_decode) == 6 and max(alive_at_decode) == 0, alive_at_decode


# ------------------------------------------------------------------------------- fuzzers
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["²", "1e400", "CON", "a/b", "..", "x.hyperlora", "/etc/passwd"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
images = st.lists(
    st.sampled_from([FACE, NO_FACE, "", "////", "data:image/png;base64,AAAA"]) | values, max_size=3
)
ENCODE_KEYS = st.sampled_from([*api.ENCODE_FIELDS, "colour"])
DETECT_KEYS = st.sampled_from(["images", "crops", "crop_size", "x"])


def assert_answered(response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert set(response.json()) == SHAPE, response.text


@FUZZ
@given(body=st.dictionaries(ENCODE_KEYS, values, max_size=5), photos=images)
def test_fuzz_encode(client, body, photos):
    assert_answered(client.post("/hyperlora/v1/encode", json={"images": photos, **body}))


@FUZZ
@given(body=st.dictionaries(DETECT_KEYS, values, max_size=4), photos=images)
def test_fuzz_detect(client, body, photos):
    assert_answered(client.post("/hyperlora/v1/detect", json={"images": photos, **body}))


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_fuzz_raw_bodies(client, raw):
    assert_answered(client.post("/hyperlora/v1/encode", content=raw))


# Starlette's path patterns do not match line breaks, so such names never reach the route.
route_names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40)


@FUZZ
@given(name=route_names, preview=st.text(max_size=5))
def test_fuzz_identity_names(client, name, preview):
    quoted = "".join(c if c.isalnum() else f"%{ord(c):02X}" if ord(c) < 128 else c for c in name)
    assert_answered(client.get(f"/hyperlora/v1/identities/{quoted}", params={"preview": preview}))
    assert_answered(client.delete(f"/hyperlora/v1/identities/{quoted}"))


# Mixes across parts and likeness arguments: a saved identity ("alice"), unknown and bad names,
# the generation's photos, parts of photos, and every kind of weight.
identity_names = st.sampled_from(["alice", "nobody", "@photos", "", ":", "a/b", "CON", "0.5"])
mix_parts = st.dictionaries(
    st.sampled_from(["identity", "images", "photo_weights", "weight", "x"]),
    identity_names | images | values,
    max_size=4,
)
mix_texts = st.lists(
    st.tuples(identity_names, st.sampled_from(["", ":1", ":0.5", ":", ":-1", ":nan", "::"])).map(
        "".join
    ),
    max_size=10,
).map(", ".join)
mixes = st.lists(mix_parts | identity_names | values, max_size=10) | mix_texts


@pytest.fixture
def saved_client(client):
    response = client.post("/hyperlora/v1/encode", json={"images": [FACE], "save_as": "alice"})
    assert response.status_code == 200, response.text
    return client


@FUZZ
@given(mix=mixes, body=st.dictionaries(ENCODE_KEYS, values, max_size=2), photos=images)
def test_fuzz_encode_mixes(saved_client, mix, body, photos):
    request = {"images": photos, **body, "mix": mix}
    assert_answered(saved_client.post("/hyperlora/v1/encode", json=request))


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "identity": identity_names | values,
            "reference_images": images,
            "images": images,
            "x": values,
        },
    )
)
def test_fuzz_likeness(saved_client, body):
    assert_answered(saved_client.post("/hyperlora/v1/likeness", json=body))
