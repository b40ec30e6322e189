"""``modules.script_callbacks``: registration only; tests fire what they need."""

from collections import defaultdict

callbacks = defaultdict(list)


def _register(name):
    def register(fn, *, name_=None):
        callbacks[name].append(fn)

    return register


on_before_ui = _register("before_ui")
on_ui_settings = _register("ui_settings")
on_app_started = _register("app_started")
on_script_unloaded = _register("script_unloaded")
on_model_loaded = _register("model_loaded")
on_infotext_pasted = _register("infotext_pasted")
on_after_component = _register("after_component")


def remove_current_script_callbacks():
    pass


def fire(name, *args, **kwargs):
    for fn in callbacks[name]:
        fn(*args, **kwargs)
