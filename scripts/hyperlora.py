"""HyperLoRA for the Stable Diffusion WebUI: the AlwaysOn script, glue only.

The work of a job lives in ``hyperlora_ext.webui.job``: the identity is predicted (or reused from
the cache) in ``process()``, patched in before every sampling pass, and taken out after the job
(and, defensively, at the start of the next one). Every hook runs inside ``job.boundary``: the
WebUI swallows exceptions that escape a hook, so none may; each becomes a visible HyperLoRA error.
"""

from __future__ import annotations

from typing import Any

from modules import script_callbacks, scripts

# A1111 puts this extension's folder on sys.path only while this file executes: import the
# package now, so later (lazy) imports of its submodules resolve through hyperlora_ext.__path__.
import hyperlora_ext
import hyperlora_ext.webui.host as host
from hyperlora_ext.webui import api, job, likeness, settings, ui, xyz

assert hyperlora_ext.__version__

script_callbacks.on_app_started(lambda demo, app: api.register_routes(app))
# The X/Y/Z script (a root script, loaded before extensions) is already in scripts_data: add the
# axes now, since an API-only server (--nowebui) builds its axis list before on_before_ui runs.
xyz.register_axes()  # a no-op when the X/Y/Z script is absent
script_callbacks.on_before_ui(xyz.register_axes)  # again after a UI reload
script_callbacks.on_ui_settings(lambda: settings.register(host.refresh_pipeline))
script_callbacks.on_after_component(ui.wire_likeness_status)
script_callbacks.on_script_unloaded(host.release)  # Reload UI: no patched UNet, no 2nd pipeline


class HyperLoRAScript(scripts.Script):
    sorting_priority = 15  # Forge: UI order

    def title(self) -> str:
        return "HyperLoRA"

    def show(self, is_img2img: bool) -> Any:
        return scripts.AlwaysVisible

    def ui(self, is_img2img: bool) -> list[Any]:
        from hyperlora_ext.webui.ui import build_ui

        panel = build_ui(self.elem_id)
        self.infotext_fields = panel.infotext_fields
        self.paste_field_names = panel.paste_field_names
        return panel.inputs

    def before_process(self, p: Any, *args: Any) -> None:
        if not job.begin(p):
            return  # ADetailer's copy of a job in progress
        with job.boundary(p, "cleaning up after the previous job"):
            job.restore(p)  # a job that failed inside the sampler skipped postprocess

    def process(self, p: Any, *args: Any) -> None:
        with job.boundary(p, "preparing the identity"):
            job.prepare(p, args)

    def process_before_every_sampling(self, p: Any, *args: Any, **kwargs: Any) -> None:
        with job.boundary(p, "applying the identity"):
            job.apply(p)  # 1.10+: every pass (hires too), after the LoRA list was rebuilt

    def process_batch(self, p: Any, *args: Any, **kwargs: Any) -> None:
        if not _has_every_sampling_hook():  # 1.8/1.9
            with job.boundary(p, "applying the identity"):
                job.apply(p)

    def before_hr(self, p: Any, *args: Any) -> None:
        if not _has_every_sampling_hook():  # 1.8/1.9: the hires pass rebuilt the LoRA list
            with job.boundary(p, "applying the identity"):
                job.apply(p)

    def postprocess_image_after_composite(self, p: Any, pp: Any, *args: Any) -> None:
        # The last hook before the infotext is written: after hires fix, ADetailer and inpainting.
        with job.boundary(p, "scoring the likeness", after_images=True):
            likeness.score(p, pp.image)

    def postprocess(self, p: Any, processed: Any, *args: Any) -> None:
        with job.boundary(p, "restoring the checkpoint's weights", after_images=True):
            job.finish(p)


def _has_every_sampling_hook() -> bool:
    return "process_before_every_sampling" in vars(scripts.Script)
