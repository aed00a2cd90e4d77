"""Network namespaces for multi-host tests: several "hosts" on one machine, each with its own
network stack, joined by a bridge.

:class:`Lab` makes them with ``ip netns``/``ip link``: one namespace per host name, a veth pair
from each into the first namespace (the "switch", where a bridge joins them), addresses from the
RFC 2544 benchmarking range 198.18.0.0/15 on the interfaces inside the namespaces only, ``lo``
up, and no route out of them (no default route, nothing in the initial namespace). ``close()``
kills what runs in them and deletes them (their interfaces go with them).

Code reaches a host in two ways: :meth:`Netns.popen` runs a program there (``ip netns exec``),
and :meth:`Netns.call` runs a Python function in a thread that has entered the namespace
(``setns(2)`` applies to the calling thread only), so sockets it opens are the host's.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from collections.abc import Callable
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


class NetnsError(RuntimeError):
    """The namespaces could not be made (not root, no ``ip``, a kernel without netns)."""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")


class Netns:
    """One named network namespace (``/run/netns/NAME``)."""

    def __init__(self, name: str, address: str):
        self.name = name
        self.address = address

    def enter(self) -> None:
        """Move the calling thread into this namespace (for good: use a thread of its own)."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.name}")
        finally:
            os.close(fd)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a new thread inside this namespace; its result, or its exception."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                self.enter()
                box["result"] = fn(*args, **kwargs)
            except BaseException as e:  # handed to the caller
                box["error"] = e

        thread = threading.Thread(target=run, name=f"netns-{self.name}")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def wrap(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen(self.wrap(argv), **kwargs)


class Lab:
    """Hosts ``{name: address}`` on one /24 of 198.18.0.0/15; the first is the switch's host.

    Names are prefixed with ``tag`` (keep it short: interface names have 15 characters)."""

    def __init__(self, tag: str, hosts: dict[str, str]):
        self.tag = tag
        self.hosts = {name: Netns(f"{tag}-{name}", address) for name, address in hosts.items()}
        self._made: list[str] = []

    def __getitem__(self, name: str) -> Netns:
        return self.hosts[name]

    def create(self) -> Lab:
        """Make the namespaces, the bridge and the links; NetnsError (after cleaning up) if impossible."""
        try:
            first, *others = self.hosts.values()
            for ns in self.hosts.values():
                _ip("netns", "add", ns.name)
                self._made.append(ns.name)
                _ip("-n", ns.name, "link", "set", "lo", "up")
            bridge = "br0"
            _ip("-n", first.name, "link", "add", bridge, "type", "bridge")
            _ip("-n", first.name, "addr", "add", f"{first.address}/24", "dev", bridge)
            _ip("-n", first.name, "link", "set", bridge, "up")
            for n, ns in enumerate(others):
                outer, inner = f"{self.tag}s{n}", f"{self.tag}h{n}"
                # Made in the switch's namespace, so nothing appears in the initial one.
                _ip("-n", first.name, "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns.name)
                _ip("-n", first.name, "link", "set", outer, "master", bridge, "up")
                _ip("-n", ns.name, "addr", "add", f"{ns.address}/24", "dev", inner)
                _ip("-n", ns.name, "link", "set", inner, "up")
        except (NetnsError, OSError, subprocess.SubprocessError) as e:
            self.close()
            raise NetnsError(str(e)) from None
        return self

    def close(self) -> None:
        """Kill every process left in the namespaces, then delete them."""
        for name in reversed(self._made):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._made.clear()
