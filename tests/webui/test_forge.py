"""ForgeAdapter against the Forge 2 test double (tests/webui/fake_webui/forge_backend.py)."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from hyperlora_ext.errors import UnsupportedForgeError
from hyperlora_ext.lora_format import lora_digest
from hyperlora_ext.webui import forge, forge_vram
from tests.webui.fake_webui import forge_backend as fb
from tests.webui.forge_helpers import WEIGHT, fingerprint, hook, make_model, snapshot, unet_of

RANK, ALPHA = 2, 1.0


@pytest.fixture
def memory(monkeypatch) -> fb.MemoryManagement:
    return fb.install(monkeypatch)


@pytest.fixture
def adapter(memory) -> forge.ForgeAdapter:
    return forge.ForgeAdapter()


def deltas(unet: fb.TinySDXLUNet, lora: dict, scale: float) -> dict[str, torch.Tensor]:
    """Expected ``{param key: strength * alpha / rank * up @ down}`` for an SGM-style LoRA."""
    out = {}
    for name in unet.attention_linears():
        stem = "lora_unet_" + name.replace(".", "_")
        up, down = lora[f"{stem}.lora_up.weight"], lora[f"{stem}.lora_down.weight"]
        rank_scale = lora[f"{stem}.alpha"].item() / down.shape[0]
        out[f"diffusion_model.{name}.weight"] = scale * rank_scale * (up.float() @ down.float())
    return out


def assert_weights(sd_model, before, expected_deltas, atol=1e-6):
    after = snapshot(sd_model)
    for key, value in after.items():
        if key in expected_deltas:
            assert torch.allclose(
                value.float(), before[key].float() + expected_deltas[key], atol=atol
            ), key
        else:
            assert torch.equal(value, before[key]), f"{key} must not change"


@pytest.mark.parametrize("style", ["sgm", "diffusers"])
def test_deltas_land_on_attention_layers_with_lora_scale(adapter, memory, style):
    sd_model = make_model()
    before = snapshot(sd_model)
    lora = fb.kohya_lora_for(unet_of(sd_model), rank=RANK, alpha=ALPHA, style=style)
    reports = []
    p = fb.FakeProcessing(sd_model)
    fb.run_job(p, memory, before_every_sampling=hook(adapter, lora, reports=reports))

    assert reports == [forge.ApplyReport(matched=560, expected=560, skipped=0)]
    sgm_lora = fb.kohya_lora_for(unet_of(sd_model), rank=RANK, alpha=ALPHA, style="sgm")
    assert_weights(sd_model, before, deltas(unet_of(sd_model), sgm_lora, WEIGHT))
    # The shared patcher holding the user's LoRAs is never mutated.
    assert not forge._has_ours(sd_model.forge_objects_after_applying_lora.unet.lora_patches)
    identifiers = list(p.sampled_unets[0].lora_patches)
    assert identifiers == [(forge.FILENAME_PREFIX + lora_digest(lora), WEIGHT, 1.0, False)]


def test_stacks_with_user_lora_and_restores_to_user_state(adapter, memory):
    sd_model = make_model()
    before = snapshot(sd_model)
    unet = unet_of(sd_model)
    user = fb.kohya_lora_for(unet, rank=4, alpha=8.0, seed=7)
    ours = fb.kohya_lora_for(unet, rank=RANK, alpha=ALPHA, seed=1)
    p = fb.FakeProcessing(sd_model, user_loras=[("/loras/user.safetensors", user, 0.7)])

    fb.run_job(p, memory)
    user_only = snapshot(sd_model)
    user_deltas = deltas(unet, user, 0.7)
    assert_weights(sd_model, before, user_deltas, atol=1e-5)

    fb.run_job(p, memory, before_every_sampling=hook(adapter, ours))
    both = {k: user_deltas[k] + v for k, v in deltas(unet, ours, WEIGHT).items()}
    assert_weights(sd_model, before, both, atol=1e-5)

    adapter.restore(p)
    assert all(torch.equal(v, user_only[k]) for k, v in snapshot(sd_model).items())


def test_reapplies_at_new_strength_and_for_a_new_face(adapter, memory):
    sd_model = make_model()
    before = snapshot(sd_model)
    unet = unet_of(sd_model)
    face_a = fb.kohya_lora_for(unet, seed=1)
    face_b = fb.kohya_lora_for(unet, seed=2)
    p = fb.FakeProcessing(sd_model)

    fb.run_job(p, memory, before_every_sampling=hook(adapter, face_a, 0.8))
    assert_weights(sd_model, before, deltas(unet, face_a, 0.8))
    fb.run_job(p, memory, before_every_sampling=hook(adapter, face_a, -0.5))
    assert_weights(sd_model, before, deltas(unet, face_a, -0.5))
    fb.run_job(p, memory, before_every_sampling=hook(adapter, face_b, -0.5))
    assert_weights(sd_model, before, deltas(unet, face_b, -0.5))


def test_hires_fix_double_hook_applies_once(adapter, memory):
    sd_model = make_model()
    before = snapshot(sd_model)
    lora = fb.kohya_lora_for(unet_of(sd_model))
    reports = []
    p = fb.FakeProcessing(sd_model, enable_hr=True, n_iter=2)
    loader = sd_model.forge_objects_original.unet.lora_loader

    fb.run_job(p, memory, before_every_sampling=hook(adapter, lora, reports=reports))

    assert len(reports) == 6  # per batch: first pass, after before_hr, after the hires reset
    assert len(p.sampled_unets) == 4
    assert all(forge._has_ours(unet.lora_patches) for unet in p.sampled_unets)
    assert loader.merge_count == 1  # the same identifiers later: Forge does not re-merge
    assert_weights(sd_model, before, deltas(unet_of(sd_model), lora, WEIGHT))


def test_apply_twice_without_reset_keeps_one_patch(adapter):
    sd_model = make_model()
    lora = fb.kohya_lora_for(unet_of(sd_model))
    p = fb.FakeProcessing(sd_model)
    adapter.apply(p, lora, 0.8, "hyperlora_abc")
    adapter.apply(p, lora, 0.3, "hyperlora_abc")
    ours = [i for i in sd_model.forge_objects.unet.lora_patches if forge._is_ours(i)]
    assert ours == [("hyperlora:abc", 0.3, 1.0, False)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_restore_is_bit_identical(adapter, memory, dtype):
    sd_model = make_model(dtype)
    pristine = fingerprint(sd_model)
    lora = fb.kohya_lora_for(unet_of(sd_model), dtype=dtype)
    p = fb.FakeProcessing(sd_model)

    fb.run_job(p, memory, before_every_sampling=hook(adapter, lora, 1.3))
    assert fingerprint(sd_model) != pristine
    adapter.restore(p)
    assert fingerprint(sd_model) == pristine
    assert not forge._has_ours(sd_model.forge_objects.unet.lora_patches)
    adapter.restore(p)  # idempotent, nothing left to undo
    assert fingerprint(sd_model) == pristine


def test_failed_job_is_restored_by_restore_or_by_forge_next_load(adapter, memory):
    sd_model = make_model(torch.float16)
    pristine = fingerprint(sd_model)
    lora = fb.kohya_lora_for(unet_of(sd_model), dtype=torch.float16)
    p = fb.FakeProcessing(sd_model)

    def fail(_):
        raise RuntimeError("interrupted in the sampler")

    for cleanup in ("restore", "next plain job"):
        with pytest.raises(RuntimeError):
            fb.run_job(p, memory, before_every_sampling=hook(adapter, lora), on_sample=fail)
        assert fingerprint(sd_model) != pristine
        if cleanup == "restore":
            adapter.restore(p)
        else:
            fb.run_job(p, memory)
        assert fingerprint(sd_model) == pristine, cleanup


def test_shape_mismatches_are_skipped_and_counted(adapter, memory):
    sd_model = make_model()
    before = snapshot(sd_model)
    unet = unet_of(sd_model)
    lora = fb.kohya_lora_for(unet)
    wrong_rows = "lora_unet_middle_block_1_transformer_blocks_3_attn1_to_q"
    wrong_cols = "lora_unet_output_blocks_4_1_transformer_blocks_1_attn2_to_k"
    lora[f"{wrong_rows}.lora_up.weight"] = torch.randn(17, RANK)
    lora[f"{wrong_cols}.lora_down.weight"] = torch.randn(RANK, 2048)
    reports = []
    p = fb.FakeProcessing(sd_model)

    fb.run_job(p, memory, before_every_sampling=hook(adapter, lora, reports=reports))

    report = reports[0]
    assert (report.matched, report.expected, report.skipped) == (558, 560, 2)
    assert [line.split(":")[0] for line in report.reasons] == [wrong_rows, wrong_cols]
    expected = deltas(unet, fb.kohya_lora_for(unet), WEIGHT)
    del expected["diffusion_model.middle_block.1.transformer_blocks.3.attn1.to_q.weight"]
    del expected["diffusion_model.output_blocks.4.1.transformer_blocks.1.attn2.to_k.weight"]
    assert_weights(sd_model, before, expected)


def test_unskipped_shape_mismatch_breaks_forge_merge(memory):
    """Why the adapter checks shapes: Forge accepts the key and then fails while merging."""
    sd_model = make_model()
    unet = sd_model.forge_objects.unet
    key = "diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight"
    bad = {key: ("lora", (torch.randn(17, RANK), torch.randn(RANK, 16), 1.0, None, None))}
    clone = unet.clone()
    assert clone.add_patches(filename="bad", patches=bad) == {key}
    with pytest.raises(RuntimeError):
        clone.refresh_loras()


def test_unknown_layer_names_are_reported(adapter):
    sd_model = make_model()
    lora = fb.kohya_lora_for(unet_of(sd_model))
    lora["lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight"] = (
        torch.randn(RANK, 4)
    )
    lora["lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_up.weight"] = torch.randn(
        4, RANK
    )
    report = adapter.apply(fb.FakeProcessing(sd_model), lora, WEIGHT, "x")
    assert (report.matched, report.expected, report.skipped) == (560, 561, 1)
    layer = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    assert report.reasons == (f"{layer}: no such layer in this checkpoint",)


def test_non_sdxl_checkpoint_is_refused_and_cleaned(adapter, memory):
    sd_model = make_model(torch.float16)
    pristine = fingerprint(sd_model)
    lora = fb.kohya_lora_for(unet_of(sd_model), dtype=torch.float16)
    p = fb.FakeProcessing(sd_model)
    adapter.apply(p, lora, WEIGHT, "abc")
    memory.load_models_gpu([sd_model.forge_objects.unet])
    assert fingerprint(sd_model) != pristine

    sd_model.is_sdxl, sd_model.is_sd1 = False, True
    report = adapter.apply(p, lora, WEIGHT, "abc")
    assert (report.matched, report.expected, report.skipped) == (0, 560, 560)
    assert "SD1.x" in report.reasons[0]
    assert not forge._has_ours(sd_model.forge_objects.unet.lora_patches)
    assert fingerprint(sd_model) == pristine


def test_patches_made_before_the_reset_are_lost(adapter, memory):
    sd_model = make_model()
    before = snapshot(sd_model)
    lora = fb.kohya_lora_for(unet_of(sd_model))
    p = fb.FakeProcessing(sd_model)

    fb.run_job(p, memory, process_batch=hook(adapter, lora))
    assert not forge._has_ours(p.sampled_unets[-1].lora_patches)
    assert_weights(sd_model, before, {})

    fb.run_job(
        p, memory, process_batch=hook(adapter, lora), before_every_sampling=hook(adapter, lora)
    )
    assert forge._has_ours(p.sampled_unets[-1].lora_patches)
    assert_weights(sd_model, before, deltas(unet_of(sd_model), lora, WEIGHT))


def test_quantised_unet_is_patched_online_without_writing_weights(adapter, memory):
    sd_model = make_model(storage_dtype="gguf")
    before = snapshot(sd_model)
    lora = fb.kohya_lora_for(unet_of(sd_model))
    p = fb.FakeProcessing(sd_model)

    fb.run_job(p, memory, before_every_sampling=hook(adapter, lora))
    assert_weights(sd_model, before, {})
    online = [m for m in unet_of(sd_model).modules() if hasattr(m, "forge_online_loras")]
    assert len(online) == 560
    assert p.sampled_unets[-1].has_online_lora()

    adapter.restore(p)
    assert not any(hasattr(m, "forge_online_loras") for m in unet_of(sd_model).modules())


def test_detection_and_refusal(monkeypatch, memory):
    assert forge.detect_generation() == "forge2"
    with pytest.raises(UnsupportedForgeError):
        forge.ForgeAdapter().apply(types.SimpleNamespace(sd_model=object()), {}, 1.0, "x")
    monkeypatch.setitem(sys.modules, "backend.patcher.lora", None)
    monkeypatch.setitem(sys.modules, "ldm_patched.modules.lora", None)
    assert forge.detect_generation() is None
    with pytest.raises(UnsupportedForgeError):
        forge.ForgeAdapter()


def test_encoder_memory_helpers(memory):
    sd_model = make_model()
    unet = sd_model.forge_objects.unet
    memory.load_models_gpu([unet])
    encoder = torch.nn.Sequential(torch.nn.Linear(3, 3))

    assert forge_vram.load_encoder(encoder) == memory.get_torch_device()
    assert forge_vram.load_encoder(encoder) == memory.get_torch_device()
    loaded_models = [loaded.model.model for loaded in memory.current_loaded_models]
    assert loaded_models == [encoder, unet.model]  # one entry, most recent first

    forge_vram.free_vram()
    assert memory.current_loaded_models == [] and memory.empty_cache_calls == 2


# --------------------------------------------------------------------------- Forge 1 / reForge


class LdmPatcher:
    """ldm_patched ModelPatcher: per-key patch lists, positional add_patches returning a list."""

    def __init__(self, model):
        self.model = model
        self.patches: dict[str, list] = {}

    def clone(self):
        other = LdmPatcher(self.model)
        other.patches = {k: v[:] for k, v in self.patches.items()}
        return other

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        keys = dict(self.model.named_parameters())
        accepted = [k for k in patches if k in keys]
        for k in accepted:
            self.patches.setdefault(k, []).append((strength_patch, patches[k], strength_model))
        return accepted


def test_ldm_patched_path_is_positional_and_idempotent(monkeypatch):
    def load_lora_dict_only(lora, to_load):  # reForge returns the patch dict alone
        return fb.load_lora(lora, to_load)[0]

    lora_module = types.ModuleType("ldm_patched.modules.lora")
    lora_module.load_lora = load_lora_dict_only
    lora_module.model_lora_keys_unet = fb.model_lora_keys_unet
    monkeypatch.setitem(sys.modules, "ldm_patched.modules.lora", lora_module)
    torch.manual_seed(0)
    kmodel = fb.KModel(fb.TinySDXLUNet())
    user = object()
    base = LdmPatcher(kmodel)
    base.patches["diffusion_model.middle_block.1.proj_in.weight"] = [(1.0, user, 1.0)]
    sd_model = types.SimpleNamespace(forge_objects=fb.ForgeObjects(unet=base), is_sdxl=True)
    p = types.SimpleNamespace(sd_model=sd_model)
    adapter = forge.ForgeAdapter("ldm_patched")
    lora = fb.kohya_lora_for(kmodel.diffusion_model)

    assert adapter.apply(p, lora, 0.8, "x") == forge.ApplyReport(560, 560, 0)
    assert adapter.apply(p, lora, 0.4, "x") == forge.ApplyReport(560, 560, 0)
    patched = sd_model.forge_objects.unet
    assert patched is not base and len(base.patches) == 1
    assert len(patched.patches) == 561
    assert {len(v) for v in patched.patches.values()} == {1}
    assert {v[0][0] for k, v in patched.patches.items() if "attn" in k} == {0.4}

    adapter.restore(p)
    assert sd_model.forge_objects.unet.patches == base.patches


def test_check_counts_what_apply_would_patch_without_patching(adapter):
    sd_model = make_model()
    lora = fb.kohya_lora_for(unet_of(sd_model))
    p = fb.FakeProcessing(sd_model)
    unet = sd_model.forge_objects.unet
    report = adapter.check(p, lora, "x")
    assert (report.matched, report.expected, report.skipped) == (560, 560, 0)
    elsewhere = {k.replace("lora_unet_", "lora_unet_nowhere_"): v for k, v in lora.items()}
    missed = adapter.check(p, elsewhere, "y")
    assert (missed.matched, missed.expected) == (0, 560)
    assert missed.reasons[0].endswith("no such layer in this checkpoint")
    assert sd_model.forge_objects.unet is unet and not unet.lora_patches  # nothing patched
    assert adapter.apply(p, lora, WEIGHT, "x") == report


# ------------------------------------------------------------------ sliders: several LoRAs


def slider_patches(unet, strength=0.5):
    main, plus, minus = (fb.kohya_lora_for(unet, seed=s) for s in (1, 2, 3))
    return (main, plus, minus), [
        forge.Patch(main, WEIGHT, lora_digest(main)),
        forge.Patch(plus, strength, "slider+" + lora_digest(plus)),
        forge.Patch(minus, -strength, "slider-" + lora_digest(minus)),
    ]


def test_slider_adds_positive_and_subtracts_negative(adapter, memory):
    sd_model = make_model()
    before = snapshot(sd_model)
    unet = unet_of(sd_model)
    (main, plus, minus), patches = slider_patches(unet, 0.5)
    reports = []
    p = fb.FakeProcessing(sd_model)
    fb.run_job(
        p, memory, before_every_sampling=lambda p: reports.extend(adapter.apply_all(p, patches))
    )

    assert reports == [forge.ApplyReport(560, 560, 0)] * 3
    parts = [deltas(unet, main, WEIGHT), deltas(unet, plus, 0.5), deltas(unet, minus, -0.5)]
    total = {k: sum(d[k] for d in parts) for k in parts[0]}
    assert_weights(sd_model, before, total, atol=1e-5)
    ours = [i for i in p.sampled_unets[0].lora_patches if forge._is_ours(i)]
    assert [i[1] for i in ours] == [WEIGHT, 0.5, -0.5]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_slider_restore_is_bit_identical(adapter, memory, dtype):
    sd_model = make_model(dtype)
    pristine = fingerprint(sd_model)
    _, patches = slider_patches(unet_of(sd_model), 1.2)
    p = fb.FakeProcessing(sd_model, enable_hr=True)
    fb.run_job(p, memory, before_every_sampling=lambda p: adapter.apply_all(p, patches))
    assert fingerprint(sd_model) != pristine
    adapter.restore(p)
    assert fingerprint(sd_model) == pristine
    assert not forge._has_ours(sd_model.forge_objects.unet.lora_patches)


def test_next_job_without_slider_drops_its_loras(adapter, memory):
    sd_model = make_model()
    before = snapshot(sd_model)
    unet = unet_of(sd_model)
    (main, _, _), patches = slider_patches(unet)
    p = fb.FakeProcessing(sd_model)
    fb.run_job(p, memory, before_every_sampling=lambda p: adapter.apply_all(p, patches))
    fb.run_job(p, memory, before_every_sampling=hook(adapter, main))
    assert_weights(sd_model, before, deltas(unet, main, WEIGHT))


def test_the_pipeline_loads_its_encoders_through_forge_memory_management(memory, tmp_path):
    from hyperlora_ext.identity import IdentityOptions, IdentityPipeline
    from hyperlora_ext.models import ModelRoots
    from tests import fake_antelopev2
    from tests.encoders._photos import face_photo
    from tests.factories import write_tiny_clip, write_tiny_hyperlora

    roots = ModelRoots.from_models_dir(tmp_path / "models")
    write_tiny_hyperlora(roots.hyper_lora / "tiny")
    write_tiny_clip(roots.clip_vit / "clip_vit_large_14")
    fake_antelopev2.build(roots.antelopev2)
    sd_model = make_model()
    unet = sd_model.forge_objects.unet
    memory.load_models_gpu([unet])
    seen = []

    class Recording(forge_vram.ForgePlacement):
        @staticmethod
        def load(module):
            device = forge_vram.load_encoder(module)
            seen.append([loaded.model.model for loaded in memory.current_loaded_models])
            return device

    pipeline = IdentityPipeline(roots, dtype=torch.float32, placement=Recording())
    pipeline.predict([face_photo()], IdentityOptions("tiny"))
    engine, clip = pipeline.models.engine.module(), pipeline.models.clip.model
    assert seen == [[engine, unet.model], [clip, engine, unet.model]]  # the UNet is not evicted
    patcher = engine.__dict__["hyperlora_forge_patcher"]
    assert patcher.size == pipeline.models.engine.nbytes()  # Forge sees how much room it needs
    # after the job both are released: Forge holds only the UNet, the encoders are on the CPU
    assert [loaded.model.model for loaded in memory.current_loaded_models] == [unet.model]
    assert pipeline.models.engine.device == torch.device("cpu")
    pipeline.predict([face_photo(faces=((250, 90, 470, 390),))], IdentityOptions("tiny"))
    assert len(seen) == 4  # loaded again for the next face
