"""``modules.errors``: A1111 logs hook exceptions and carries on; the double records them."""

import traceback

reported: list[str] = []


def report(message, *, exc_info=False):
    text = message + ("\n" + traceback.format_exc() if exc_info else "")
    reported.append(text)
    print(text)


def display(e, task, *, full_traceback=False):
    report(f"{task}: {type(e).__name__}: {e}")
