"""The lab's hosts (`l2dsr:hosts`): read and checked up front, each problem naming the entry and the fix.

Empty (the default) is one host, `l2dsr:libvirtUri`, as every single-host stack has it. With several
hosts, each needs the address the others reach it on: the lab's one L2 segment is carried between
them by VXLAN over that underlay (virt/tunnel.py), and SSH reaches a remote host's guests through it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from lab.spec import PROJECT, HostSpec, Problem

HOST_KEYS = {"name": "name", "uri": "uri", "address": "address", "user": "user", "identityFile": "identity_file"}
NAME = re.compile(r"^[a-z][a-z0-9-]{0,11}$")
URI = re.compile(r"^[a-z][a-z0-9+]*://")
USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")  # a POSIX user name: never an ssh option (`-o...`)
# The transports the lab supports, and what each may hold: a local system or session libvirtd, one over
# SSH, and libvirt's test driver (the fast tests). No `ext` (it runs a command), no `tcp`/`tls`.
TRANSPORTS = {"qemu": "local", "qemu+ssh": "ssh", "test": "local"}
URI_PARAMS = {"keyfile", "no_verify", "no_tty", "socket", "known_hosts", "known_hosts_verify", "mode"}
URI_FIX = "give qemu:///system, or qemu+ssh://user@host/system for a remote host"


def uri_problem(uri: str) -> str:
    """What is wrong with a libvirt URI for the lab, or "" (pure)."""
    if not URI.match(uri):
        return f"{uri!r} is not a libvirt URI; {URI_FIX}"
    parts = urlsplit(uri)
    transport = TRANSPORTS.get(parts.scheme)
    if transport is None:
        return f"{uri!r}: transport {parts.scheme!r} is not one the lab supports ({', '.join(TRANSPORTS)}); {URI_FIX}"
    if transport == "local" and parts.netloc:
        return f"{uri!r}: a {parts.scheme}:// URI names no host; for a remote one use qemu+ssh://user@host/system"
    if transport == "ssh" and not parts.hostname:
        return f"{uri!r}: qemu+ssh:// needs a host; e.g. qemu+ssh://root@10.254.0.2/system"
    if parts.username is not None and not USER.match(parts.username):
        return f"{uri!r}: user {parts.username!r} is not a user name (a-z, 0-9, '_', '-'; starting with a letter)"
    if parts.hostname and parts.hostname.startswith("-"):
        return f"{uri!r}: host {parts.hostname!r} is not a host name"
    if parts.scheme == "qemu" and parts.path not in ("/system", "/session"):
        return f"{uri!r}: a qemu URI's path is /system or /session"
    unknown = sorted({k for k, _ in parse_qsl(parts.query, keep_blank_values=True)} - URI_PARAMS)
    if unknown:
        return f"{uri!r}: parameter(s) {', '.join(unknown)} not supported by the lab (it takes {', '.join(sorted(URI_PARAMS))})"
    return ""


MAX_HOSTS = 8  # the hosts' own addresses on the segment (lab/addressing.py) sit below the clients'
LOCAL_NAME = "local"


def expand_home(value: str) -> str:
    """`~/` in a path, or in a URI's keyfile parameter, is the home of the user running pulumi."""
    if "://" not in value:
        return os.path.expanduser(value) if value else value
    parts = urlsplit(value)
    query = [(k, os.path.expanduser(v) if k == "keyfile" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/~"))) if query else value


def read_hosts(entries: Any, libvirt_uri: str, uri_was_set: bool) -> tuple[tuple[HostSpec, ...], list[Problem]]:
    """The inventory: l2dsr:hosts, or one host from l2dsr:libvirtUri."""
    if not entries:
        return (HostSpec(LOCAL_NAME, libvirt_uri),), []
    problems: list[Problem] = []
    if uri_was_set:
        problems.append(
            Problem(
                "libvirtUri",
                f"set together with {PROJECT}:hosts, which names each host's uri; remove it "
                f"(`pulumi config rm {PROJECT}:libvirtUri`)",
            )
        )
    if not isinstance(entries, list):
        return (HostSpec(LOCAL_NAME, libvirt_uri),), [
            Problem("hosts", "is not a list; give a list of {name, uri, address, user}")
        ]
    hosts: list[HostSpec] = []
    for i, entry in enumerate(entries):
        where = f"entry {i + 1}"
        if not isinstance(entry, Mapping):
            problems.append(Problem("hosts", f"{where} is not a map; give {{name, uri, address, user}}"))
            continue
        unknown = sorted(set(entry) - set(HOST_KEYS))
        if unknown:
            problems.append(
                Problem("hosts", f"{where}: unknown key(s) {', '.join(unknown)}; a host has {', '.join(HOST_KEYS)}")
            )
        values = {HOST_KEYS[k]: str(v) for k, v in entry.items() if k in HOST_KEYS and v is not None}
        name = values.get("name", "")
        where = f"host {name!r}" if name else where
        if not NAME.match(name):
            problems.append(
                Problem("hosts", f"{where}: name {name!r} is not 1-12 of a-z, 0-9 and '-' (starting with a letter)")
            )
        why = uri_problem(values.get("uri", ""))
        if why:
            problems.append(Problem("hosts", f"{where}: uri {why}"))
        if "user" in values and not USER.match(values["user"]):
            problems.append(
                Problem(
                    "hosts",
                    f"{where}: user {values['user']!r} is not a POSIX user name (a-z, 0-9, '_', '-', starting with a "
                    "letter or '_', at most 32); give the account SSH logs in as, e.g. root",
                )
            )
        host = HostSpec(
            name=name,
            uri=expand_home(values.get("uri", "")),
            address=values.get("address", ""),
            user=values.get("user", "") or ("root" if values.get("address") else ""),
            identity_file=expand_home(values.get("identity_file", "")),
        )
        if len(entries) > 1 or host.address:
            try:
                ipaddress.IPv4Address(host.address)
            except ValueError:
                problems.append(
                    Problem(
                        "hosts",
                        f"{where}: address {host.address!r} is not an IPv4 address; with several hosts each needs the "
                        "address the others reach it on (the VXLAN underlay, and SSH for a remote host)",
                    )
                )
        hosts.append(host)
    for label, attr in (("name", "name"), ("uri", "uri"), ("address", "address")):
        seen: dict[str, int] = {}
        for h in hosts:
            value = getattr(h, attr)
            if value and value in seen:
                problems.append(Problem("hosts", f"two hosts have the {label} {value!r}; give each host its own"))
            seen[value] = 1
    if sum(h.local for h in hosts) > 1:
        problems.append(
            Problem(
                "hosts",
                "more than one host has a local URI (no host in it): they would be one libvirtd; "
                "reach the others by qemu+ssh://user@address/system",
            )
        )
    if len(hosts) > MAX_HOSTS:
        problems.append(Problem("hosts", f"{len(hosts)} hosts; the lab spans at most {MAX_HOSTS}"))
    return tuple(hosts), problems
