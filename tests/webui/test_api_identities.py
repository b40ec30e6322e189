"""The saved-identity routes added for the gallery: rename, and the LoRA file for download."""

from __future__ import annotations

import base64

from safetensors.torch import load

from hyperlora_ext.lora_format import lora_digest
from hyperlora_ext.webui import api_models as m
from tests.webui.tiny_host import FACE, OTHER_FACE, expect_error

URL = "/hyperlora/v1/identities"


def _save(client, name, face=FACE):
    response = client.post("/hyperlora/v1/encode", json={"images": [face], "save_as": name})
    assert response.status_code == 200, response.text
    return response.json()["saved"]


def test_rename_moves_the_identity_and_answers_its_new_record(client, host):
    saved = _save(client, "bob")
    response = client.post(f"{URL}/bob/rename", json={"new_name": "robert"})
    assert response.status_code == 200, response.text
    body = m.RenameResponse(**response.json())
    assert body.renamed == "bob" and body.identity.name == "robert"
    assert body.identity.digest == saved["digest"] and body.identity.prompt_tag.startswith(
        "<lora:robert:"
    )
    assert [i["name"] for i in client.get(URL).json()["identities"]] == ["robert"]
    folder = host.lora_dir / "hyperlora"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        f"robert{s}"
        for s in (".safetensors", ".json", ".preview.png", ".hyperlora.json", ".hyperlora.tokens")
    )
    expect_error(client.get(f"{URL}/bob"), 404, "IdentityNotFoundError", "robert")


def test_rename_errors_name_the_field_at_fault(client, host):
    _save(client, "bob")
    _save(client, "alice", OTHER_FACE)
    taken = expect_error(client.post(f"{URL}/bob/rename", json={"new_name": "alice"}), 409,
                         "ExportExistsError", "'alice' exists")  # fmt: skip
    assert taken["field"] == "new_name"
    bad = client.post(f"{URL}/bob/rename", json={"new_name": "../x"})
    assert expect_error(bad, 400, "InvalidNameError")["field"] == "new_name"
    missing = client.post(f"{URL}/nobody/rename", json={"new_name": "x"})
    assert expect_error(missing, 404, "IdentityNotFoundError")["field"] == "name"
    escaping = client.post(f"{URL}/..%2Fsecret/rename", json={"new_name": "x"})
    assert expect_error(escaping, 400, "InvalidNameError")["field"] == "name"
    for body, field in (({}, "new_name"), ({"new_name": 3}, "new_name"),
                        ({"new_name": "x", "overwrite": "yes"}, "overwrite"),
                        ({"new_name": "x", "force": True}, "force")):  # fmt: skip
        error = expect_error(client.post(f"{URL}/bob/rename", json=body), 422, "ApiError")
        assert error["field"] == field
    assert [i["name"] for i in client.get(URL).json()["identities"]] == ["alice", "bob"]
    replaced = client.post(f"{URL}/bob/rename", json={"new_name": "alice", "overwrite": True})
    assert replaced.status_code == 200, replaced.text
    assert [i["name"] for i in client.get(URL).json()["identities"]] == ["alice"]


def test_get_with_lora_returns_the_saved_file(client, host):
    saved = _save(client, "bob")
    plain = client.get(f"{URL}/bob").json()
    assert "lora" not in plain
    body = client.get(f"{URL}/bob", params={"lora": "true"}).json()
    data = base64.b64decode(body["lora"])
    assert data == (host.lora_dir / "hyperlora" / "bob.safetensors").read_bytes()
    assert body["lora_filename"] == "bob.safetensors"
    assert lora_digest(load(data)) == saved["digest"]
    m.IdentityWithPreview(**body)
    expect_error(client.get(f"{URL}/bob?lora=maybe"), 422, "ApiError")
    expect_error(client.get(f"{URL}/nobody?lora=true"), 404, "IdentityNotFoundError")
