"""Let PyPI's torchvision import beside the CPU torch of the smoke-test venvs.

Its ``_meta_registrations`` / ``_autograd_registrations`` register kernels for torchvision's C++
ops, which fail to load beside this torch (``operator torchvision::nms does not exist``). Import
them only when the ops loaded. A local hack: the WebUIs only use torchvision's transforms.

    python guard_torchvision.py        (with the venv's python; safe to run twice)
"""

import re
import sysconfig
from pathlib import Path

MARK = "# webui_smoke guard"
NAMES = ("_autograd_registrations", "_meta_registrations")

init = Path(sysconfig.get_paths()["purelib"]) / "torchvision" / "__init__.py"
text = init.read_text()
if MARK not in text:
    for name in NAMES:  # out of the import list, or a single-name import line
        text = re.sub(rf"^\s+{name},[ \t]*\n", "", text, count=1, flags=re.M)
        text = re.sub(rf"^from torchvision import {name}\b.*\n", "", text, count=1, flags=re.M)
    anchor = re.search(r"^from \. import extension.*\n", text, flags=re.M)
    guard = f"if extension._has_ops():  {MARK}\n    from torchvision import {', '.join(NAMES)}\n"
    init.write_text(text[: anchor.end()] + guard + text[anchor.end() :])
    print("guarded", init)
