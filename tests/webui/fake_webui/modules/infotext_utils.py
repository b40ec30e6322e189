"""``modules.infotext_utils``: quoting, parsing and pasting of the infotext, as A1111 does them."""

import json
import re

re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
re_imagesize = re.compile(r"^(\d+)x(\d+)$")


def quote(text):
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text):
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except Exception:
        return text


def parse_generation_parameters(x):
    res = {}
    prompt, negative, done_with_prompt = "", "", False
    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    for k, v in re_param.findall(lastline):
        if v and v[0] == '"' and v[-1] == '"':
            v = unquote(v)
        m = re_imagesize.match(v)
        if m is not None:
            res[f"{k}-1"], res[f"{k}-2"] = m.group(1), m.group(2)
        else:
            res[k] = v
    res["Prompt"], res["Negative prompt"] = prompt, negative
    return res


class NoChange:
    """What ``gr.update()`` means to ``connect_paste``: leave the component alone."""


def paste(paste_fields, params):
    """``connect_paste``'s ``paste_func`` without gradio: one new value (or NoChange) per field."""
    result = []
    for component, key in paste_fields:
        v = key(params) if callable(key) else params.get(key, None)
        if v is None:
            result.append(NoChange)
            continue
        try:
            valtype = type(component.value)
            if valtype is bool and v == "False":
                result.append(False)
            elif valtype is int:
                result.append(float(v))
            else:
                result.append(valtype(v))
        except Exception:
            result.append(NoChange)
    return result
