"""The part of A1111's ``scripts/xyz_grid.py`` that extensions use, and one axis run.

``AxisOption(label, type, apply, format_value, confirm, cost, choices, prepare)``; a cell is a
shallow ``copy(p)`` on which every axis ``apply(pc, x, xs)`` runs before ``process_images(pc)``.
``run_axis`` does that for one axis: CSV values (or the dropdown list for axes with choices), cast
with ``type``, checked with ``confirm``, then one job per value.

``Script`` is the selectable script, reduced to the X axis: as in A1111 and Forge its ``ui()``
copies ``axis_options`` into ``current_axis_options`` (the X type dropdown's choices) and ``run``
picks the axis by its index in that copy. Axes added to ``axis_options`` after ``ui()`` ran are
missing from both, which is what an API-only server shows (it builds the UI before
``on_before_ui``).
"""

import csv
from copy import copy
from io import StringIO

from modules import scripts


def format_value_add_label(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return f"{opt.label}: {x}"


def format_value(p, opt, x):
    if type(x) is float:
        x = round(x, 8)
    return x


def boolean_choice(reverse=False):
    def choice():
        return ["False", "True"] if reverse else ["True", "False"]

    return choice


def do_nothing(p, x, xs):
    pass


class AxisOption:
    def __init__(
        self,
        label,
        type,
        apply,
        format_value=format_value_add_label,
        confirm=None,
        cost=0.0,
        choices=None,
        prepare=None,
    ):
        self.label = label
        self.type = type
        self.apply = apply
        self.format_value = format_value
        self.confirm = confirm
        self.cost = cost
        self.prepare = prepare
        self.choices = choices


class AxisOptionImg2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = True


class AxisOptionTxt2Img(AxisOption):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_img2img = False


axis_options = [
    AxisOption("Nothing", str, do_nothing),
    AxisOption("Seed", int, lambda p, x, xs: setattr(p, "seed", x)),
]


def parse_values(opt, text=None, dropdown=None):
    """``process_axis``: the dropdown list for axes with choices, else the CSV text."""
    if opt.choices is not None and dropdown is not None:
        values = list(dropdown)
    else:
        values = [v.strip() for row in csv.reader(StringIO(text or "")) for v in row]
        values = [v for v in values if v]
    return [opt.type(v) for v in values]


def run_axis(p, opt, text=None, dropdown=None):
    """One job per axis value; returns (values, [Processed])."""
    from modules import processing

    values = parse_values(opt, text, dropdown)
    if opt.confirm:
        opt.confirm(p, values)
    results = []
    for value in values:
        cell = copy(p)
        opt.apply(cell, value, values)
        results.append(processing.process_images(cell))
    return values, results


class Script(scripts.Script):
    def title(self):
        return "X/Y/Z plot"

    def ui(self, is_img2img):
        import gradio as gr

        self.current_axis_options = [
            x for x in axis_options if type(x) is AxisOption or x.is_img2img == is_img2img
        ]
        labels = [x.label for x in self.current_axis_options]
        x_type = gr.Dropdown(label="X type", choices=labels, value=labels[1], type="index")
        x_values = gr.Textbox(label="X values", lines=1)
        x_values_dropdown = gr.Dropdown(label="X values", multiselect=True)
        return [x_type, x_values, x_values_dropdown]

    def run(self, p, x_type, x_values, x_values_dropdown):
        from modules import processing

        option = self.current_axis_options[x_type or 0]
        _, results = run_axis(p, option, x_values, x_values_dropdown or None)
        images = [image for result in results for image in result.images]
        infotexts = [text for result in results for text in result.infotexts]
        return processing.Processed(p, images, infotexts)
