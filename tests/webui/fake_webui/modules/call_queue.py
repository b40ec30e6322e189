"""``modules.call_queue``: the lock that lets one generation (or GPU job) run at a time."""

import threading

queue_lock = threading.Lock()
