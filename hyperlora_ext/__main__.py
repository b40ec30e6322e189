"""``python -m hyperlora_ext``: see :mod:`hyperlora_ext.cli`."""

import sys

from hyperlora_ext.cli import main

if __name__ == "__main__":
    sys.exit(main())
