"""ADetailer v25.3.0's face pass, replayed on the A1111 double in its real call order.

Read from Bing-su/adetailer at 36189cbe (tag v25.3.0): ``scripts/!adetailer.py`` (class
``AfterDetailerScript``), ``aaaaaa/p_method.py``, ``aaaaaa/helper.py`` and ``adetailer/args.py``.
What a HyperLoRA hook sees, in order, for each image of the main job (``postprocess_image``):

1. at batch index 0 only (``need_call_postprocess``): every always-on script's
   ``postprocess(copy(p), Processed(p, [], p.seed, ""))``, prompts preserved
   (``preserve_prompts``);
2. per detected box: a new img2img inpaint job ``p2`` (``get_i2i_p``): ``_ad_inner = True``,
   ``_ad_disabled = True``, ``extra_generation_params`` copied without callables
   (``copy_extra_params``), ``is_api`` left at its default (False), the script runner a shallow
   ``copy(p.scripts)`` whose ``alwayson_scripts`` keeps only the scripts whose file stem is listed
   in ``ad_script_names`` plus ``soft_inpainting`` and ``hypertile_script`` (``script_filter``;
   with ``ad_only_selected_scripts`` off, all of them), the script args copied item by item
   (``script_args_copy``); then ``process_images(p2)`` (``_postprocess_image_inner``: ``p2`` is a
   fresh ``copy(i2i)`` per box whose ``init_images`` list is shared with ``i2i``);
3. at the last batch index only (``need_call_process``): ``before_process(copy_p)`` then
   ``process(copy_p)`` of every always-on script on one shallow ``copy(p)`` (so
   ``extra_generation_params`` and every other dict is shared with the real ``p``).

Its script args are as in ADetailer's ``ui()``: ``[ad_enable, ad_skip_img2img, tab dict, ...]``
(``is_ad_enabled``/``get_args``); a tab's ``ad_prompt``, ``ad_controlnet_model``,
``ad_use_checkpoint``/``ad_checkpoint`` are read (``get_override_settings`` puts the checkpoint in
the face pass's ``override_settings``, which ``process_images`` applies after ``before_process``).
Its settings are registered as its ``on_ui_settings`` does (:func:`register_settings`).

Detection is replaced by fixed boxes (``boxes``): the double has no detector, and what HyperLoRA
must handle is the call order, not the boxes. ADetailer's own ``process`` (which only writes its
infotext keys) and the ControlNet extension's side of its ControlNet option are left out.
"""

from __future__ import annotations

from copy import copy
from pathlib import Path

from modules import processing, scripts, shared

# adetailer/args.py: _script_default and _builtin_script.
SCRIPT_DEFAULT = (
    "dynamic_prompting,dynamic_thresholding,lora_block_weight,negpip,wildcard_recursive,wildcards"
)
BUILTIN_SCRIPT = "hypertile_script,soft_inpainting"
FILENAME = "extensions/adetailer/scripts/!adetailer.py"


class ADetailer(scripts.Script):
    """The always-on ADetailer script with one enabled tab (``ad_prompt`` per box, [SEP])."""

    boxes: tuple[tuple[int, int, int, int], ...] = ((16, 16, 48, 48),)
    # The defaults of args() (what the tests' jobs send as ADetailer's script args):
    ad_prompt = ""  # [SEP] splits it per box; an empty part or [PROMPT] means the main prompt
    enabled = True  # ADetailer's "Enable ADetailer" (is_ad_enabled)
    controlnet_model = "None"  # ad_controlnet_model
    checkpoint = "Use same checkpoint"  # ad_checkpoint (with ad_use_checkpoint)

    def __init__(self):
        self.inner_jobs = []  # every p2 this script ran, for the tests

    def title(self):
        return "ADetailer"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def args(self):
        """ADetailer's script args for one enabled tab (what its ``ui()`` sends)."""
        tab = {
            "ad_model": "face_yolov8n.pt",
            "ad_tab_enable": True,
            "ad_prompt": self.ad_prompt,
            "ad_controlnet_model": self.controlnet_model,
            "ad_use_checkpoint": self.checkpoint != "Use same checkpoint",
            "ad_checkpoint": self.checkpoint,
        }
        return [self.enabled, False, tab]

    def postprocess_image(self, p, pp, *args):
        enabled = args[0] if args and isinstance(args[0], bool) else True
        tabs = [a for a in args if isinstance(a, dict)]
        if getattr(p, "_ad_disabled", False) or not enabled or not tabs:
            return
        tab = tabs[0]
        if p.batch_index == 0:  # need_call_postprocess
            dummy = processing.Processed(p, [])
            with _preserve_prompts(p):
                p.scripts.postprocess(copy(p), dummy)
        i2i = self._i2i(p, pp.image, tab)
        prompts = _prompts(tab.get("ad_prompt", ""), p)
        processed = None
        p2 = copy(i2i)  # the first p2 shares init_images with i2i
        for j, _box in enumerate(self.boxes):
            p2.prompt = prompts[min(j, len(prompts) - 1)]  # i2i_prompts_replace
            p2.seed = p.seed + j  # fix_p2 -> get_each_tab_seed
            processed = processing.process_images(p2)
            self.inner_jobs.append(p2)
            p2 = copy(i2i)
            p2.init_images = [processed.images[0]]
        if processed is not None:
            pp.image = processed.images[0]
        if p.batch_index == p.batch_size - 1:  # need_call_process
            with _preserve_prompts(p):
                copy_p = copy(p)
                p.scripts.before_process(copy_p)
                p.scripts.process(copy_p)

    def _i2i(self, p, image, tab):
        i2i = processing.StableDiffusionProcessingImg2Img(
            init_images=[image],
            prompt="",
            negative_prompt="",
            seed=p.seed,
            steps=p.steps,
            width=p.width,
            height=p.height,
            sd_model=p.sd_model,
            override_settings=_override_settings(tab),
        )
        i2i.extra_generation_params = {
            k: v for k, v in p.extra_generation_params.items() if not callable(v)
        }
        i2i.scripts, i2i.script_args = _script_filter(p, tab)  # the setter runs setup() here
        i2i._ad_disabled = True
        i2i._ad_inner = True
        return i2i


def _prompts(ad_prompt, p):
    """``get_prompt``/``_get_prompt``: the main job's prompt is ``p.all_prompts[i]`` (as the
    scripts left it, e.g. with trigger words added), i = iteration * batch_size + batch_index."""
    i = p.iteration * p.batch_size + p.batch_index
    main = p.all_prompts[i % len(p.all_prompts)] if p.all_prompts else p.prompt
    parts = [s.strip() for s in ad_prompt.split("[SEP]")]
    return [part.replace("[PROMPT]", main) if part else main for part in parts]


def _override_settings(tab):
    checkpoint = tab.get("ad_checkpoint")
    if tab.get("ad_use_checkpoint") and checkpoint not in (None, "None", "Use same checkpoint"):
        return {"sd_model_checkpoint": checkpoint}
    return {}


def _script_filter(p, tab):
    runner = copy(p.scripts)
    args = type(p.script_args)(_copy_or_same(a) for a in p.script_args)
    if not shared.opts.data.get("ad_only_selected_scripts", True):
        return runner, args
    names = shared.opts.data.get("ad_script_names", SCRIPT_DEFAULT).split(",")
    names += BUILTIN_SCRIPT.split(",")
    wanted = {n for name in names for n in (name, name.strip())}
    if tab.get("ad_controlnet_model", "None") != "None":
        wanted.add("controlnet")
    runner.alwayson_scripts = [
        s for s in runner.alwayson_scripts if Path(s.filename).stem in wanted
    ]
    return runner, args


def _copy_or_same(value):
    try:
        return copy(value)
    except TypeError:
        return value


class _preserve_prompts:  # aaaaaa/helper.py: preserve_prompts
    def __init__(self, p):
        self.p = p

    def __enter__(self):
        self.prompts = copy(self.p.all_prompts), copy(self.p.all_negative_prompts)

    def __exit__(self, *exc):
        self.p.all_prompts, self.p.all_negative_prompts = self.prompts


def runner(script_classes: dict[str, type], is_img2img: bool = False):
    """A ScriptRunner of ``{filename: class}`` with ``filename`` set as A1111's ``load_scripts``
    sets it (ADetailer filters the face pass's scripts by the file stem), each class recorded in
    ``scripts.scripts_data`` as ``load_scripts`` records it."""
    result = scripts.ScriptRunner(list(script_classes.values()), is_img2img=is_img2img)
    for script, filename in zip(result.scripts, script_classes, strict=True):
        script.filename = filename
        known = {(entry.script_class, entry.path) for entry in scripts.scripts_data}
        if (type(script), filename) not in known:
            entry = scripts.ScriptClassData(
                type(script), filename, str(Path(filename).parent), None
            )
            scripts.scripts_data.append(entry)
    return result


def register_settings():
    """ADetailer's ``on_ui_settings``: its two script-list options (section "ADetailer")."""
    section = ("ADetailer", "ADetailer")
    shared.opts.add_option(
        "ad_only_selected_scripts",
        shared.OptionInfo(True, "Apply only selected scripts to ADetailer", section=section),
    )
    shared.opts.add_option(
        "ad_script_names",
        shared.OptionInfo(
            SCRIPT_DEFAULT,
            "Script names to apply to ADetailer (separated by comma)",
            section=section,
        ),
    )
