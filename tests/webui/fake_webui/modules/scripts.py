"""``modules.scripts``: the Script base class, script loading and the hook dispatch of A1111.

``VERSION`` picks the hook set: "1.10" has ``process_before_every_sampling``; "1.9" and "1.8" do
not (the fixture removes it from ``Script`` and processing skips the call, as in those versions).

Like A1111, the dispatcher logs an exception escaping a hook (``errors.report``) and carries on.
Test hook (not in A1111): each such exception is also appended to ``escaped_exceptions`` as
``(hook name, exception)``, so tests can fail on a crash the WebUI would hide.
"""

import importlib.util
import os
import sys
from collections import namedtuple

from modules import errors

VERSION = "1.10"
AlwaysVisible = object()
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data = []
current_basedir = "."
escaped_exceptions = []  # test hook; install() shares one list across reinstalls


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def post_sample(self, p, ps, *args):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess_image_after_composite(self, p, pp, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def before_hr(self, p, *args):
        pass

    def elem_id(self, item_id):
        import re

        need_tabname = self.show(True) == self.show(False)
        tabkind = "img2img" if self.is_img2img else "txt2img"
        tabname = f"{tabkind}_" if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tabname}{title}_{item_id}"


def basedir():
    return current_basedir


def load_script_file(path):
    """``script_loading.load_module`` + ``load_scripts``: the extension folder is on sys.path only
    while the file executes, and the module is not put in ``sys.modules``."""
    global current_basedir
    basedir_ = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    current_basedir = basedir_
    sys.path.insert(0, basedir_)
    try:
        spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(basedir_)
        current_basedir = "."
    for obj in module.__dict__.values():
        if isinstance(obj, type) and issubclass(obj, Script) and obj is not Script:
            scripts_data.append(ScriptClassData(obj, path, basedir_, module))
    return module


class ScriptRunner:
    """One runner per tab. Script args: index 0 is the selectable-script dropdown, then each
    AlwaysOn script's slice in ``ui()`` order."""

    def __init__(self, script_classes, is_img2img=False, arg_counts=None):
        self.scripts = []
        self.alwayson_scripts = []
        position = 1
        for cls in script_classes:
            script = cls()
            script.is_img2img = is_img2img
            script.is_txt2img = not is_img2img
            script.alwayson = script.show(is_img2img) is AlwaysVisible
            script.name = script.title().lower()
            count = (arg_counts or {}).get(script.name, 10)
            script.args_from, script.args_to = position, position + count
            position += count
            self.scripts.append(script)
            if script.alwayson:
                self.alwayson_scripts.append(script)
        self.title_map = {s.title().lower(): s for s in self.scripts}

    def script(self, title):
        return self.title_map.get(title.lower())

    @property
    def selectable_scripts(self):
        return [s for s in self.scripts if not s.alwayson]

    def setup_ui(self):
        """``create_script_ui`` for every script: runs ``ui()`` in a Blocks, lays out the argument
        slices by its components and records ``api_info`` (what ``/sdapi/v1/script-info`` lists;
        the choices are those the components had when ``ui()`` ran)."""
        import gradio as gr

        position = 1
        with gr.Blocks():
            for script in self.scripts:
                controls = script.ui(script.is_img2img) or []
                script.args_from, script.args_to = position, position + len(controls)
                position += len(controls)
                script.api_info = {
                    "name": script.name,
                    "is_img2img": script.is_img2img,
                    "is_alwayson": script.alwayson,
                    "args": [_script_arg(control) for control in controls],
                }

    def run(self, p, *args):
        """The selectable script chosen by ``args[0]`` (1-based; 0 means none) runs the job."""
        index = args[0] or 0
        if index == 0:
            return None
        script = self.selectable_scripts[index - 1]
        return script.run(p, *args[script.args_from : script.args_to])

    def ordered_scripts(self, method_name):
        return self.alwayson_scripts

    def _each(self, method_name, p, *args, **kwargs):
        for script in self.ordered_scripts(method_name):
            try:
                script_args = p.script_args[script.args_from : script.args_to]
                getattr(script, method_name)(p, *args, *script_args, **kwargs)
            except Exception as error:
                escaped_exceptions.append((method_name, error))
                errors.report(f"Error running {method_name}: {script.filename}", exc_info=True)

    def setup_scrips(self, p, *, is_ui=True):
        for script in self.alwayson_scripts:
            if not is_ui and script.setup_for_ui_only:
                continue
            try:
                script_args = p.script_args[script.args_from : script.args_to]
                script.setup(p, *script_args)
            except Exception as error:
                escaped_exceptions.append(("setup", error))
                errors.report(f"Error running setup: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._each("before_process", p)

    def process(self, p):
        self._each("process", p)

    def before_process_batch(self, p, **kwargs):
        self._each("before_process_batch", p, **kwargs)

    def after_extra_networks_activate(self, p, **kwargs):
        self._each("after_extra_networks_activate", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._each("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._each("process_before_every_sampling", p, **kwargs)

    def before_hr(self, p):
        self._each("before_hr", p)

    def post_sample(self, p, ps):
        self._each("post_sample", p, ps)

    def postprocess_batch(self, p, images, **kwargs):
        self._each("postprocess_batch", p, images=images, **kwargs)

    def postprocess_image(self, p, pp):
        self._each("postprocess_image", p, pp)

    def postprocess_image_after_composite(self, p, pp):
        self._each("postprocess_image_after_composite", p, pp)

    def postprocess(self, p, processed):
        self._each("postprocess", p, processed)


def _script_arg(control):
    """``api_models.ScriptArg`` of one component (label, value, range, choices)."""
    choices = getattr(control, "choices", None)
    if choices is not None:  # gradio 4 keeps (label, value) pairs
        choices = [c[0] if isinstance(c, (list, tuple)) else c for c in choices]
    return {
        "label": getattr(control, "label", None) or "",
        "value": getattr(control, "value", None),
        "minimum": getattr(control, "minimum", None),
        "maximum": getattr(control, "maximum", None),
        "step": getattr(control, "step", None),
        "choices": choices,
    }
