"""HyperLoRA settings, model roots and pipeline reconfiguration, through the A1111 double.

Settings are registered the way the WebUI does it (the script's ``on_ui_settings`` callback) and
changed the way the Settings tab and ``/sdapi/v1/options`` do (``opts.set``, which runs onchange),
or behind the WebUI's back (``opts.data``), which the next use must notice.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from hyperlora_ext.models import ModelRoots
from hyperlora_ext.webui import fail_mode, host, services, settings

gr = pytest.importorskip("gradio")


@pytest.fixture
def registered(webui, monkeypatch):
    """The double with the script loaded and its settings callback fired."""
    monkeypatch.setattr(services, "_pipeline", None)
    monkeypatch.setattr(services, "_pipeline_key", None)
    webui.load_script()
    from modules import script_callbacks

    script_callbacks.fire("ui_settings")
    return webui


A1111_JOB = SimpleNamespace(sd_model=object())  # what free_vram_for_encoders reads of p


def option(webui, key):
    return webui.shared.opts.data_labels[key]


def test_one_section_holds_every_setting_with_its_default_and_type(registered):
    labels = registered.shared.opts.data_labels
    ours = {key for key, info in labels.items() if info.section == settings.SECTION}
    assert ours == {o.key for o in settings.OPTIONS}
    assert settings.SECTION == ("hyperlora", "HyperLoRA")
    assert {o.field for o in settings.OPTIONS} == {
        f.name for f in dataclasses.fields(settings.Settings)
    }
    for spec in settings.OPTIONS:
        info = labels[spec.key]
        default = getattr(settings.Settings(), spec.field)
        assert info.default == default and type(info.default) is type(default)
        assert registered.shared.opts.data[spec.key] == default  # add_option stores it
        assert info.label and "(" in info.comment_after  # every option explains itself
    assert option(registered, "hyperlora_api_on_error").component is gr.Radio
    assert option(registered, "hyperlora_api_on_error").component_args == {
        "choices": ["info", "fail"]
    }
    assert option(registered, "hyperlora_cache_entries").component is gr.Slider
    assert option(registered, "hyperlora_models_dir").component is None  # a text box
    assert "Reload UI" in option(registered, "hyperlora_trigger_words").comment_after
    assert settings.current() == settings.Settings()


def test_defaults_are_what_the_issue_asks_for():
    defaults = settings.Settings()
    assert defaults.models_dir == "" and defaults.keep_on_device is False
    assert defaults.trigger_words is True and defaults.api_on_error == "info"
    assert defaults.cache_entries > 0 and defaults.cache_mb > 0


def test_api_error_mode_is_read_from_the_one_settings_module(registered):
    assert settings.API_ON_ERROR == "hyperlora_api_on_error"
    assert not fail_mode._option_says_fail()
    assert registered.shared.opts.set(settings.API_ON_ERROR, "fail")
    assert fail_mode._option_says_fail()


def test_values_from_json_sliders_and_clients_are_coerced(registered):
    data = registered.shared.opts.data
    data.update(
        {
            "hyperlora_cache_entries": 4.0,  # sliders give floats
            "hyperlora_cache_mb": "256",
            "hyperlora_keep_on_device": "true",
            "hyperlora_api_on_error": "FAIL",
            "hyperlora_dtype": "float64",  # not a choice
            "hyperlora_models_dir": "  /data/models ",
        }
    )
    values = settings.current()
    assert (values.cache_entries, values.cache_mb) == (4, 256)
    assert values.keep_on_device is True and values.api_on_error == "fail"
    assert values.dtype == "auto" and values.torch_dtype is None
    assert values.models_dir == "/data/models"


# ------------------------------------------------------------------------- roots
def test_roots_default_to_the_webui_models_folder(registered):
    assert host.model_roots() == ModelRoots.from_models_dir(registered.models_dir)


def test_roots_follow_the_command_line_and_the_settings_override(registered, tmp_path):
    cmd = registered.shared.cmd_opts
    cmd.hyperlora_models_dir = str(tmp_path / "from_cli")
    cmd.hyperlora_insightface_dir = str(tmp_path / "faces")
    roots = host.model_roots()
    assert roots.hyper_lora == tmp_path / "from_cli" / "hyper_lora" / "hyper_lora"
    assert roots.insightface == tmp_path / "faces"

    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "insightface").mkdir(parents=True)
    registered.shared.opts.set("hyperlora_models_dir", str(comfy))
    roots = host.model_roots()
    assert roots.models_dir == comfy / "models"  # a ComfyUI root resolves to its models folder
    assert roots.insightface == tmp_path / "faces"  # the command line still names this one
    assert cmd.hyperlora_models_dir == str(tmp_path / "from_cli")


# ---------------------------------------------------------------- reconfiguration
def test_pipeline_is_built_from_settings_and_command_line(registered):
    registered.shared.cmd_opts.hyperlora_face_device = "cpu"
    registered.shared.opts.data.update(
        {"hyperlora_keep_on_device": True, "hyperlora_cache_entries": 3, "hyperlora_cache_mb": 64}
    )
    registered.shared.opts.data["hyperlora_dtype"] = "float32"
    pipeline = host.pipeline()
    assert pipeline is host.pipeline() is services.current_pipeline()  # reused while unchanged
    assert pipeline.roots == host.model_roots()
    assert pipeline.models.keep_on_device is True and pipeline.models.dtype == torch.float32
    assert (pipeline.cache.max_entries, pipeline.cache.max_bytes) == (3, 64 * 2**20)
    assert pipeline.models.face_device == "cpu" and pipeline.models.faces_on_cpu()
    assert pipeline.device.type == "cpu"  # the double runs with --use-cpu all


def test_auto_device_asks_the_webui_for_the_hyperlora_device(registered, monkeypatch):
    from modules import devices

    asked = []

    def device_for(task):
        asked.append(task)
        return torch.device("meta")

    monkeypatch.setattr(devices, "get_device_for", device_for)
    registered.shared.cmd_opts.use_cpu = []
    assert host.pipeline().device == torch.device("meta") and asked == ["hyperlora"]
    registered.shared.cmd_opts.hyperlora_device = "cpu"
    assert host.pipeline().device == torch.device("cpu")


def test_changing_a_pipeline_setting_rebuilds_it_at_once(registered, monkeypatch):
    first = host.pipeline()
    unloaded = []
    monkeypatch.setattr(first, "unload", lambda: unloaded.append(True))
    assert registered.shared.opts.set("hyperlora_cache_entries", 5)  # runs onchange
    second = services.current_pipeline()
    assert second is not first and unloaded == [True]  # the old encoders are freed
    assert second.cache.max_entries == 5 and host.pipeline() is second


def test_other_settings_keep_the_pipeline_and_its_cache(registered):
    first = host.pipeline()
    registered.shared.opts.set("hyperlora_trigger_words", False)
    registered.shared.opts.set("hyperlora_api_on_error", "fail")
    assert host.pipeline() is first


def test_unloading_the_script_frees_the_pipeline_and_restores_the_unet(registered, monkeypatch):
    first = host.pipeline()
    unloaded, restored = [], []
    monkeypatch.setattr(first, "unload", lambda: unloaded.append(True))
    adapter = host.get_adapter()
    monkeypatch.setattr(adapter, "restore", lambda p=None: restored.append(p))
    from modules import script_callbacks

    script_callbacks.fire("script_unloaded")  # Reload UI
    assert unloaded == [True] and restored == [None]
    assert services.current_pipeline() is None and host.pipeline() is not first


def test_a_change_behind_the_webuis_back_is_noticed_on_next_use(registered, tmp_path):
    first = host.pipeline()
    registered.shared.opts.data["hyperlora_models_dir"] = str(tmp_path / "elsewhere")
    second = host.pipeline()  # e.g. override_settings, or a settings file edited by hand
    assert second is not first and second.roots.models_dir == tmp_path / "elsewhere"


def test_onchange_before_first_use_builds_nothing(registered):
    registered.shared.opts.set("hyperlora_keep_on_device", True)
    assert services.current_pipeline() is None


# ------------------------------------------------------------------------ memory
def test_a1111_frees_vram_only_under_lowvram_and_not_for_cpu_encoders(registered, monkeypatch):
    from modules import lowvram

    registered.shared.cmd_opts.hyperlora_device = "cuda"
    host.pipeline()
    before = lowvram.evictions
    host.free_vram_for_encoders(A1111_JOB)
    assert lowvram.evictions == before  # --lowvram/--medvram off: the checkpoint stays
    monkeypatch.setattr(lowvram, "is_enabled", lambda sd_model: True)
    host.free_vram_for_encoders(A1111_JOB)
    assert lowvram.evictions == before + 1
    registered.shared.cmd_opts.hyperlora_device = "cpu"
    host.pipeline()
    host.free_vram_for_encoders(A1111_JOB)
    assert lowvram.evictions == before + 1  # encoders on the CPU need no VRAM


def test_forge_unloads_its_models_before_encoding(registered, monkeypatch):
    from tests.webui.fake_webui import forge_backend as fb

    memory = fb.install(monkeypatch)
    monkeypatch.setattr(
        "modules.lowvram.send_everything_to_cpu", lambda: pytest.fail("A1111 path on Forge")
    )
    registered.shared.cmd_opts.hyperlora_device = "cuda"
    host.pipeline()
    sd_model = fb.FakeForgeSDXL(fb.TinySDXLUNet())
    memory.load_models_gpu([sd_model.forge_objects.unet])
    assert memory.current_loaded_models
    host.free_vram_for_encoders(SimpleNamespace(sd_model=sd_model))
    assert memory.current_loaded_models == [] and memory.empty_cache_calls == 2


def test_the_script_frees_vram_only_when_the_encoders_run(registered, monkeypatch):
    from modules import lowvram

    from tests.webui.harness import ON, Harness

    registered.shared.cmd_opts.hyperlora_device = "cuda"
    host.pipeline()  # the real one, on "cuda" (the harness stubs it below)
    harness = Harness(registered, monkeypatch)
    monkeypatch.setattr(lowvram, "is_enabled", lambda sd_model: sd_model is harness.model)
    before = lowvram.evictions
    harness.job(ON)
    assert lowvram.evictions == before  # the stub pipeline never computed
    harness.before_compute()  # what the pipeline calls on a cache miss
    assert lowvram.evictions == before + 1
    registered.processing.sampler_step_hooks.clear()


@pytest.mark.parametrize(
    ("ram", "free"), [(16 * 2**30, True), (20 * 2**30, True), (32 * 2**30, False), (None, False)]
)
def test_freeing_the_encoders_is_the_default_on_small_machines(monkeypatch, ram, free):
    from hyperlora_ext import memory

    monkeypatch.setattr(memory, "total_ram_bytes", lambda: ram)
    assert settings._small_machine() is free


def test_this_machine_reports_its_ram():
    from hyperlora_ext.memory import total_ram_bytes

    assert total_ram_bytes() > 2**30
