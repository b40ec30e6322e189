"""``modules.shared``: options, command-line options, job state and the loaded model."""

import json
import types


class Options:
    """``shared.opts``: attribute access over ``data`` with defaults, like A1111's Options.

    ``defaults`` holds the builtin options the double needs without an OptionInfo; options added
    with ``add_option`` behave as in ``modules/options.py`` (default copied into ``data``, ``set``
    runs ``onchange`` and reverts the value when it raises).
    """

    def __init__(self, defaults):
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "defaults", dict(defaults))
        object.__setattr__(self, "data_labels", {})

    def __getattr__(self, key):
        if key in self.data:
            return self.data[key]
        if key in self.data_labels:
            return self.data_labels[key].default
        if key in self.defaults:
            return self.defaults[key]
        raise AttributeError(key)

    def __setattr__(self, key, value):
        self.data[key] = value

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def set(self, key, value, is_api=False, run_callbacks=True):
        old = self.data.get(key, None)
        if old == value:
            return False
        option = self.data_labels[key]
        if option.do_not_save or (is_api and option.restrict_api):
            return False
        self.data[key] = value
        if run_callbacks and option.onchange is not None:
            try:
                option.onchange()
            except Exception:
                self.data[key] = old
                return False
        return True

    def save(self, filename):
        assert not cmd_opts.freeze_settings, "saving settings is disabled"
        with open(filename, "w", encoding="utf8") as file:
            json.dump(self.data, file, indent=4, ensure_ascii=False)

    def onchange(self, key, func, call=True):
        self.data_labels[key].onchange = func
        if call:
            func()

    def get_default(self, key):
        if key in self.data_labels:
            return self.data_labels[key].default
        return self.defaults.get(key)


class OptionInfo:
    def __init__(
        self,
        default=None,
        label="",
        component=None,
        component_args=None,
        onchange=None,
        section=None,
        refresh=None,
        comment_before="",
        comment_after="",
        infotext=None,
        restrict_api=False,
        category_id=None,
    ):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def info(self, text):
        self.comment_after += f"<span class='info'>({text})</span>"
        return self

    def needs_reload_ui(self):
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self

    def needs_restart(self):
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self


def options_section(section, options):
    for info in options.values():
        if len(section) == 2:
            info.section = section
        elif len(section) == 3:
            info.section, info.category_id = section[:2], section[2]
    return options


opts = Options(
    {
        "lora_functional": False,
        "sd_lora": "None",
        "lora_add_hashes_to_infotext": True,
        "lora_in_memory_limit": 0,
        "extra_networks_default_multiplier": 1.0,
        "samples_save": False,
        "CLIP_stop_at_last_layers": 1,  # "Clip skip" at the top of the page
        "sdxl_clip_l_skip": False,  # A1111 1.10: Settings > Stable Diffusion > "Clip skip SDXL"
    }
)
options_templates = {}

cmd_opts = types.SimpleNamespace(
    lowvram=False,
    medvram=False,
    medvram_sdxl=False,
    use_cpu=["all"],
    api=False,
    nowebui=False,
    lora_dir="models/Lora",
    no_prompt_history=True,
    ui_settings_file="config.json",
    freeze_settings=False,
)
checkpoints = {}  # title -> loaded model: what sd_models.checkpoint_aliases would load
config_filename = cmd_opts.ui_settings_file  # install() points it into the test's folder


class State:
    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.job = ""
        self.job_count = -1
        self.job_no = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None
        self.ended = 0  # how often end() ran (the double's record)

    def skip(self):
        self.skipped = True

    def interrupt(self):
        self.interrupted = True

    def begin(self, job="(unknown)"):
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.job_count = -1
        self.job_no = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None  # the progress text the UI shows under the bar
        self.job = job

    def end(self):
        self.job = ""
        self.job_count = 0
        self.ended += 1


state = State()
sd_model = None
