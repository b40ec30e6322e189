"""``modules.shared``: options, command-line options, job state and the loaded model."""

import types


class Options:
    """``shared.opts``: attribute access over ``data`` with defaults, like A1111's Options."""

    def __init__(self, defaults):
        object.__setattr__(self, "data", {})
        object.__setattr__(self, "defaults", dict(defaults))
        object.__setattr__(self, "data_labels", {})

    def __getattr__(self, key):
        if key in self.data:
            return self.data[key]
        if key in self.defaults:
            return self.defaults[key]
        raise AttributeError(key)

    def __setattr__(self, key, value):
        self.data[key] = value

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.defaults.setdefault(key, info.default)

    def onchange(self, key, func, call=True):
        pass

    def get_default(self, key):
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
        infotext=None,
        restrict_api=False,
    ):
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.section = section
        self.infotext = infotext

    def info(self, text):
        return self

    def needs_reload_ui(self):
        return self

    def needs_restart(self):
        return self


def options_section(section, options):
    for info in options.values():
        info.section = section
    return options


opts = Options(
    {
        "lora_functional": False,
        "sd_lora": "None",
        "lora_add_hashes_to_infotext": True,
        "lora_in_memory_limit": 0,
        "extra_networks_default_multiplier": 1.0,
        "samples_save": False,
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
)


class State:
    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.job = ""
        self.job_count = -1
        self.textinfo = None

    def interrupt(self):
        self.interrupted = True

    def begin(self, job="(unknown)"):
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.job_count = -1


state = State()
sd_model = None
