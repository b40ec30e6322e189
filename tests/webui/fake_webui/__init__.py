"""The test double of the A1111 1.10 WebUI surface HyperLoRA uses (docs/webui-integration.md).

``install()`` puts this folder first on ``sys.path`` (the WebUI root and the builtin Lora
extension are both importable top-level in A1111), imports the modules, patches ``nn.Linear``
like ``lora_script.py`` does and registers the Lora extra network. ``uninstall()`` undoes all of it.
Only A1111 parts live here; a Forge double may sit beside it in this folder.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
EXTENSION_ROOT = ROOT.parents[2]  # the repository: extensions/sd-webui-hyperlora in a real WebUI
_MODULES = ("networks", "network", "network_lora", "lora_patches", "extra_networks_lora")
_installed_patches: list = []  # undone by uninstall() even if a test removed "networks"
# (hook name, exception) for every exception that escaped a script hook, in any install.
escaped_hook_exceptions: list = []


@dataclass
class FakeWebUI:
    shared: Any
    processing: Any
    scripts: Any
    networks: Any
    errors: Any
    infotext_utils: Any
    models_dir: Path
    lora_dir: Path

    def load_model(self, kind: str = "sdxl", **kwargs: Any) -> Any:
        """Load a tiny checkpoint as ``shared.sd_model`` and fire ``on_model_loaded``."""
        from tests.webui.fake_webui.tiny_sdxl import TinySDXL

        model = TinySDXL(kind, **kwargs)
        self.shared.sd_model = model
        self.networks.assign_network_names_to_compvis_modules(model)  # on_model_loaded
        return model

    def load_script(self, path: Path | None = None) -> type:
        """Load ``scripts/hyperlora.py`` the way A1111 does; return its Script class."""
        path = path or EXTENSION_ROOT / "scripts" / "hyperlora.py"
        module = self.scripts.load_script_file(str(path))
        base = self.scripts.Script
        classes = vars(module).values()
        return next(
            v for v in classes if isinstance(v, type) and issubclass(v, base) and v is not base
        )

    def runner(self, script_class: type, is_img2img: bool = False) -> Any:
        return self.scripts.ScriptRunner([script_class], is_img2img=is_img2img)


def _drop_modules() -> None:
    for name in list(sys.modules):
        if name == "modules" or name.startswith("modules.") or name in _MODULES:
            del sys.modules[name]


def install(tmp_dir: Path, version: str = "1.10") -> FakeWebUI:
    _drop_modules()
    sys.path.insert(0, str(ROOT))
    scripts = importlib.import_module("modules.scripts")
    scripts.VERSION = version
    scripts.escaped_exceptions = escaped_hook_exceptions
    if version != "1.10":
        del scripts.Script.process_before_every_sampling  # added in 1.10
    shared = importlib.import_module("modules.shared")
    paths = importlib.import_module("modules.paths")
    paths.models_path = str(tmp_dir / "models")
    paths.data_path = str(tmp_dir)
    lora_dir = tmp_dir / "models" / "Lora"
    lora_dir.mkdir(parents=True, exist_ok=True)
    shared.cmd_opts.lora_dir = str(lora_dir)
    shared.config_filename = str(tmp_dir / "config.json")

    networks = importlib.import_module("networks")
    lora_patches = importlib.import_module("lora_patches")
    extra_networks = importlib.import_module("modules.extra_networks")
    extra_networks_lora = importlib.import_module("extra_networks_lora")
    networks.originals = lora_patches.LoraPatches()
    _installed_patches.append(networks.originals)
    networks.extra_network_lora = extra_networks_lora.ExtraNetworkLora()
    extra_networks.register_extra_network(networks.extra_network_lora)
    return FakeWebUI(
        shared=shared,
        processing=importlib.import_module("modules.processing"),
        scripts=scripts,
        networks=networks,
        errors=importlib.import_module("modules.errors"),
        infotext_utils=importlib.import_module("modules.infotext_utils"),
        models_dir=tmp_dir / "models",
        lora_dir=lora_dir,
    )


def uninstall() -> None:
    while _installed_patches:
        _installed_patches.pop().undo()
    _drop_modules()
    if str(ROOT) in sys.path:
        sys.path.remove(str(ROOT))
