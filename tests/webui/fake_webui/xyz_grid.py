"""The part of A1111's ``scripts/xyz_grid.py`` that extensions use (webui.md §7), and one axis run.

``AxisOption(label, type, apply, format_value, confirm, cost, choices, prepare)``; a cell is a
shallow ``copy(p)`` on which every axis ``apply(pc, x, xs)`` runs before ``process_images(pc)``.
``run_axis`` does that for one axis: CSV values (or the dropdown list for axes with choices), cast
with ``type``, checked with ``confirm``, then one job per value.
"""

import csv
from copy import copy
from io import StringIO


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
