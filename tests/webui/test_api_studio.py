"""/hyperlora/v1/encode with photo weights and mixes, on the real tiny pipeline (see test_api)."""

from __future__ import annotations

import base64

import torch
from safetensors.torch import load

from tests.webui.tiny_host import FACE, OTHER_FACE, expect_error

URL = "/hyperlora/v1/encode"


def encode(client, **request):
    response = client.post(URL, json=request)
    assert response.status_code == 200, response.text
    return response.json()


def test_photo_weights_change_the_identity_and_zero_leaves_a_photo_out(client):
    plain = encode(client, images=[FACE, OTHER_FACE])
    equal = encode(client, images=[FACE, OTHER_FACE], photo_weights=[2, 2])
    weighted = encode(client, images=[FACE, OTHER_FACE], photo_weights=[3, 1])
    first_only = encode(client, images=[FACE, OTHER_FACE], photo_weights=[1, 0])
    assert equal["digest"] == plain["digest"] and weighted["digest"] != plain["digest"]
    assert first_only["digest"] == encode(client, images=[FACE])["digest"]


def test_bad_photo_weights_name_the_field(client):
    for weights in ([1], [1, -1], [0, 0], "heavy"):
        response = client.post(URL, json={"images": [FACE, OTHER_FACE], "photo_weights": weights})
        assert expect_error(response, 422, "ArgumentError")["field"] == "photo_weights", weights


def test_a_mix_of_saved_identities_is_saved_like_any_identity(client, host):
    encode(client, images=[FACE], save_as="alice")
    encode(client, images=[OTHER_FACE], save_as="bob")
    tokens = host.lora_dir / "hyperlora" / "alice.hyperlora.tokens"
    assert tokens.is_file()
    mix = [{"identity": "alice", "weight": 0.7}, {"identity": "bob", "weight": 0.3}]
    mixed = encode(client, mix=mix, save_as="alice_bob", return_lora=True)
    photos = encode(client, images=[FACE, OTHER_FACE], photo_weights=[0.7, 0.3], return_lora=True)
    ours, theirs = (load(base64.b64decode(body["lora"])) for body in (mixed, photos))
    for key in theirs:  # mixing identities = weighting their photos (one photo each)
        torch.testing.assert_close(ours[key].float(), theirs[key].float(), rtol=2e-2, atol=2e-3)
    assert mixed["saved"]["name"] == "alice_bob"
    assert (host.lora_dir / "hyperlora" / "alice_bob.hyperlora.tokens").is_file()
    only_alice = encode(
        client, mix=[{"identity": "alice", "weight": 1}, {"identity": "bob", "weight": 0}]
    )
    assert only_alice["digest"] == encode(client, images=[FACE])["digest"]
    with_photos = encode(client, images=[OTHER_FACE], mix="alice:0.5, @photos:0.5")
    assert with_photos["digest"] not in (only_alice["digest"], mixed["digest"])


def test_mix_errors_name_the_field(client, host):
    from hyperlora_ext.webui.host import identity_store

    encode(client, images=[FACE], save_as="alice")
    lora = identity_store().load("alice").lora
    identity_store().save("old", lora, model="tiny", photos=1)  # saved without tokens
    response = client.post(URL, json={"mix": "alice:1, old:1"})
    body = expect_error(response, 422, "NoTokensError", "'old'", "saved before mixing existed")
    assert body["field"] == "mix"
    response = client.post(URL, json={"mix": "alice:1, nobody:1"})
    assert expect_error(response, 404, "IdentityNotFoundError", "nobody")["field"] == "mix"
    response = client.post(URL, json={"mix": [{"identity": "alice", "weight": -1}]})
    assert expect_error(response, 422, "ArgumentError")["field"] == "mix.1.weight"
    response = client.post(URL, json={"mix": [{"images": ["/etc/passwd"], "weight": 1}]})
    assert expect_error(response, 400, "ImageError", "path")["field"] == "mix.1.images"


def test_a_mix_saved_through_the_api_keeps_its_likeness_reference(client, host):
    """Regression: /encode saved a mix without its likeness reference, so /likeness answered
    422 "saved before this version" for it (saving the same mix from the accordion kept it)."""
    encode(client, images=[FACE], save_as="alice")
    encode(client, images=[OTHER_FACE], save_as="bob")
    mixed = encode(client, mix="alice:0.7, bob:0.3", save_as="alice_bob")
    assert mixed["saved"]["likeness_reference"] is True
    response = client.post(
        "/hyperlora/v1/likeness", json={"images": [FACE], "identity": "alice_bob"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["images"][0]["likeness"] is not None


def test_a_large_server_file_named_in_a_request_is_refused_as_a_path(client, tmp_path):
    """Regression: the argument model looked up the size of any path a client sent, so a large
    server file got 422 "too large" while a missing one got 400: the answer told them apart."""
    from hyperlora_ext.facts import MAX_IMAGE_BYTES

    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (MAX_IMAGE_BYTES + 1))
    for path in (str(big), str(tmp_path / "missing.png")):
        response = client.post(URL, json={"mix": [{"images": [path], "weight": 1}]})
        body = expect_error(response, 400, "ImageError", "paths and URLs are not accepted")
        assert body["field"] == "mix.1.images"
