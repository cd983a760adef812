"""sd_notify without a dependency: READY, WATCHDOG, RELOADING, STOPPING, STATUS.

With ``Type=notify`` systemd passes a datagram socket in ``NOTIFY_SOCKET``;
outside systemd every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends state changes to systemd, if the daemon runs under it."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):  # abstract namespace
            addr = "\0" + addr[1:]
        self.address = addr or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_interval: float | None = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            # ping at half the timeout, as sd_watchdog_enabled(3) advises
            self.watchdog_interval = int(usec) / 1_000_000 / 2

    def notify(self, *states: str) -> bool:
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Never block the event loop on a reader that is behind: a
            # notification that does not fit is dropped (the next one follows).
            sock.setblocking(False)
            try:
                sock.connect(self.address)
                sock.sendall("\n".join(states).encode())
            except OSError:
                return False
        return True

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd >= 253 track Type=notify-reload properly
        self.notify("RELOADING=1", f"MONOTONIC_USEC={int(time.monotonic() * 1_000_000)}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")
