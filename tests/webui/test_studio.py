"""Per-photo weights, mixes and sliders through whole jobs on the A1111 double (pipeline stubbed
as in test_script), the infotext they write and how it pastes back."""

from __future__ import annotations

import pytest
import torch

from hyperlora_ext.args import HyperLoRAArgs
from hyperlora_ext.lora_format import lora_digest
from hyperlora_ext.webui import host, infotext
from tests.webui.fake_webui.tiny_sdxl import unet_fingerprint
from tests.webui.harness import ON, Harness, build, ours
from tests.webui.loras import make_lora

SLIDER = {"positive": "older", "negative": "younger", "strength": 0.5}


@pytest.fixture
def hl(webui, monkeypatch):
    harness = Harness(webui, monkeypatch)
    harness.multipliers = []
    webui.processing.sampler_step_hooks.append(
        lambda p, step: harness.multipliers.append(
            [(n.name, n.unet_multiplier) for n in webui.networks.loaded_networks]
        )
    )
    yield harness
    webui.processing.sampler_step_hooks.clear()
    webui.shared.state.begin()


def save(hl, name, seed, *, tokens=True, model="tiny"):
    lora = make_lora(hl.model, seed=seed)
    kept = torch.full((4, 3), float(seed)) if tokens else None
    host.identity_store().save(name, lora, model=model, photos=1, tokens=kept)
    return lora_digest(lora)


# ---------------------------------------------------------------------- photo weights


def test_photo_weights_reach_the_pipeline_and_the_infotext(hl):
    p, _ = hl.job({**ON, "images": ["a.png", "b.png"], "photo_weights": [1, 0.25]})
    assert hl.predictions[-1].photo_weights == (1.0, 0.25)
    assert p.extra_generation_params[infotext.PHOTO_WEIGHTS] == "1, 0.25"
    assert infotext.ERROR not in p.extra_generation_params


def test_photo_weights_of_the_wrong_length_are_a_visible_error(hl):
    p, _ = hl.job({**ON, "images": ["a.png", "b.png"], "photo_weights": [1]})
    error = p.extra_generation_params[infotext.ERROR]
    assert "photo_weights" in error and "1 weight(s) for 2 photo(s)" in error
    assert infotext.DIGEST not in p.extra_generation_params
    assert not any(ours(names) for _, names, _ in hl.samples)


# ---------------------------------------------------------------------------- sliders


def test_slider_patches_both_identities_and_restores_bit_exactly(hl):
    before = unet_fingerprint(hl.model)
    plain = hl.image()
    older, younger = save(hl, "older", 11), save(hl, "younger", 12)
    p, processed = hl.job({**ON, "slider": SLIDER})
    names = [name for name, _ in hl.multipliers[-1]]
    assert names[1:] == [f"hyperlora_slider+{older}", f"hyperlora_slider-{younger}"]
    assert [m for _, m in hl.multipliers[-1]] == [0.8, 0.5, -0.5]
    params = p.extra_generation_params
    assert (params[infotext.SLIDER_POSITIVE], params[infotext.SLIDER_NEGATIVE]) == (
        "older",
        "younger",
    )
    assert params[infotext.SLIDER_STRENGTH] == "0.5"
    assert params[infotext.SLIDER_DIGESTS] == f"{older}/{younger}"
    assert "HyperLoRA slider positive: older" in processed.infotexts[0]
    after = unet_fingerprint(hl.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(hl.image(), plain)


def test_slider_changes_the_image_and_strength_zero_is_off(hl):
    save(hl, "older", 11), save(hl, "younger", 12)
    identity_only = hl.image(ON)
    with_slider = hl.image({**ON, "slider": SLIDER})
    off = hl.image({**ON, "slider": {**SLIDER, "strength": 0}})
    assert not torch.equal(with_slider, identity_only)
    assert torch.equal(off, identity_only)


def test_slider_from_photos(hl):
    save(hl, "older", 11)
    p, _ = hl.job({**ON, "slider": {**SLIDER, "negative": {"images": ["kid.png"]}}})
    assert len(hl.predictions) == 2  # the identity's photos, then the slider's
    assert p.extra_generation_params[infotext.SLIDER_NEGATIVE] == "@images(1)"
    assert [m for _, m in hl.multipliers[-1]] == [0.8, 0.5, -0.5]


def test_slider_with_a_missing_identity_is_a_visible_error(hl):
    save(hl, "older", 11)
    p, processed = hl.job({**ON, "slider": SLIDER})
    error = p.extra_generation_params[infotext.ERROR]
    assert error.startswith("slider: no saved identity named 'younger'"), error
    assert not any(ours(names) for _, names, _ in hl.samples)
    assert "HyperLoRA identity" not in processed.infotexts[0]


# ------------------------------------------------------------------------------- mixes


def test_mix_of_a_saved_identity_and_the_photos(hl):
    save(hl, "alice", 3, model="tiny_saved")
    p, _ = hl.job({**ON, "mix": "alice:0.7, @photos:0.3"})
    tokens, weights, model = hl.pipeline.calls[-1]
    assert weights == [0.7, 0.3] and model == "tiny_saved"
    assert torch.equal(tokens[0], torch.full((4, 3), 3.0))  # alice's stored tokens
    assert hl.predictions[-1].model == "tiny_saved"  # the photos in the same model's space
    params = p.extra_generation_params
    assert (
        params[infotext.MIX] == "alice:0.7, @photos:0.3" and params[infotext.MODEL] == "tiny_saved"
    )
    assert all(ours(names) for _, names, _ in hl.samples)


def test_mix_of_saved_identities_from_the_api_form(hl):
    save(hl, "alice", 3), save(hl, "bob", 4)
    mix = [{"identity": "alice", "weight": 0.7}, {"identity": "bob", "weight": 0.3}]
    p, _ = hl.job({"enabled": True, "mix": mix})
    assert [w for w in hl.pipeline.calls[-1][1]] == [0.7, 0.3]
    assert hl.predictions == []  # no photos encoded
    assert infotext.ERROR not in p.extra_generation_params


@pytest.mark.parametrize(
    ("mix", "fragment"),
    [
        ("old:1, bob:1", "saved before mixing existed"),
        ("alice:1, nobody:1", "no saved identity named 'nobody'"),
        ("alice:1, other:1", "only identities of one HyperLoRA model mix"),
        ("alice:1", "the mix does not use them"),
    ],
)
def test_mix_problems_are_visible_errors(hl, mix, fragment):
    save(hl, "alice", 3), save(hl, "bob", 4), save(hl, "old", 5, tokens=False)
    save(hl, "other", 6, model="tiny_edit")
    args = {"enabled": True, "model": "tiny", "mix": mix}
    p, _ = hl.job({**args, "images": ["alice.png"]} if "use them" in fragment else args)
    assert fragment in p.extra_generation_params[infotext.ERROR]
    assert not any(ours(names) for _, names, _ in hl.samples)


def test_an_old_identity_without_tokens_still_works_alone(hl):
    save(hl, "old", 5, tokens=False)
    p, _ = hl.job({"enabled": True, "identity": "old"})
    assert infotext.ERROR not in p.extra_generation_params
    assert all(ours(names) for _, names, _ in hl.samples)


# ------------------------------------------------------------------------------ paste


def test_paste_restores_weights_mix_and_slider(webui, monkeypatch, hl):
    save(hl, "older", 11), save(hl, "younger", 12), save(hl, "alice", 3)
    wanted = HyperLoRAArgs(
        enabled=True, images=("a.png", "b.png"), model="tiny", photo_weights=(1, 0.5),
        mix="alice:0.6, @photos:0.4", slider_positive="older", slider_negative="younger",
        slider_strength=-0.75,
    )  # fmt: skip
    _, processed = hl.job(wanted.to_dict())
    webui.processing.sampler_step_hooks.clear()
    script, inputs = build(webui, monkeypatch)
    params = webui.infotext_utils.parse_generation_parameters(processed.infotexts[0])
    assert {infotext.MIX, infotext.SLIDER_STRENGTH} <= set(script.paste_field_names)
    new_values = webui.infotext_utils.paste(script.infotext_fields, params)
    by_component = dict(zip([id(c) for c, _ in script.infotext_fields], new_values, strict=True))
    no_change = webui.infotext_utils.NoChange
    values = [by_component.get(id(c), no_change) for c in inputs]
    values = [c.value if v is no_change else v for c, v in zip(inputs, values, strict=True)]
    restored = HyperLoRAArgs.from_positional(values)
    assert restored == wanted.replace(images=(), dtype="fp32")  # the dtype used pastes back


# -------------------------------------------------- reproducibility and settings without effect
def test_the_dtype_used_is_in_the_infotext(hl):
    p, processed = hl.job(ON)
    assert p.extra_generation_params[infotext.DTYPE] == "fp32"  # what the stub's encoders used
    assert "HyperLoRA dtype: fp32" in processed.infotexts[0]
    assert "made in" not in p.extra_generation_params.get(infotext.WARNING, "")


def test_a_pasted_dtype_this_machine_does_not_use_is_a_warning(hl):
    p, processed = hl.job({**ON, "dtype": "bf16"})
    params = p.extra_generation_params
    assert "made in bf16" in params[infotext.WARNING] and "fp32" in params[infotext.WARNING]
    assert params[infotext.DTYPE] == "fp32"  # the infotext says what was used, not what was asked
    assert "made in bf16" in processed.comments
    assert infotext.ERROR not in params and all(ours(names) for _, names, _ in hl.samples)
    same, _ = hl.job({**ON, "dtype": "fp32"})
    assert "made in" not in same.extra_generation_params.get(infotext.WARNING, "")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"slider_strength": 1.5}, "slider strength is ignored"),
        ({"slider": {**SLIDER, "negative": "older"}}, "'older' on both sides"),
        ({"identity": "older", "photo_weights": [1]}, "photo weights are ignored"),
        ({"mix": "older:1, @photos:1", "model": "tiny_edit"}, "model 'tiny_edit' is ignored"),
    ],
)
def test_settings_without_effect_are_a_warning_not_silence(hl, extra, fragment):
    save(hl, "older", 11), save(hl, "younger", 12)
    p, processed = hl.job({**ON, **extra})
    params = p.extra_generation_params
    assert fragment in params[infotext.WARNING] and infotext.ERROR not in params
    assert fragment in processed.comments
    assert all(ours(names) for _, names, _ in hl.samples)  # the image still has the identity


def test_a_mix_names_its_parts_to_the_pipeline(hl):
    save(hl, "alice", 3)
    mix = [{"identity": "alice"}, {"images": ["b.png", "c.png"]}]
    hl.job({"enabled": True, "model": "tiny", "mix": mix})
    assert hl.pipeline.labels[-2] == ["mix part 2, image 1", "mix part 2, image 2"]
    assert hl.pipeline.labels[-1] == ["alice", "photos of part 2"]
    hl.job({**ON, "mix": "alice:1, @photos:1"})
    assert hl.pipeline.labels[-1] == ["alice", "@photos"]
