"""What /proc says about a process: CPU time, resident memory, established TCP sockets.

Linux only. Pure readers (no trio): each returns None when the process is gone, so a
harness that samples a fleet never fails on a process that ended between two reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

PROC = Path("/proc")
TCP_ESTABLISHED = "01"  # the `st` column of /proc/net/tcp
TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
              "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN",
              "0B": "CLOSING"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, proc: Path = PROC) -> float | None:
    """User + system CPU seconds the process has used so far."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    return parse_stat_cpu(text)


def parse_stat_cpu(text: str) -> float:
    """utime + stime (fields 14 and 15) of a /proc/PID/stat line, in seconds.

    The command name (field 2) is in parentheses and may hold spaces or parentheses itself,
    so the fields are counted from after its last ')'.
    """
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): utime is field 14, stime field 15.
    return (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


def rss_bytes(pid: int, proc: Path = PROC) -> int | None:
    try:
        text = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    return parse_status_rss(text)


def parse_status_rss(text: str) -> int | None:
    """VmRSS of a /proc/PID/status text, in bytes (None for a zombie, which has none)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            return int(parts[1]) * 1024  # always given in kB
    return None


def established_inodes(tables: Iterable[str]) -> dict[int, int]:
    """Socket inode -> local port, of ESTABLISHED connections in /proc/net/tcp(6) texts."""
    found: dict[int, int] = {}
    for table in tables:
        for line in table.splitlines()[1:]:  # the first line is the header
            cols = line.split()
            if len(cols) > 9 and cols[3] == TCP_ESTABLISHED:
                found[int(cols[9])] = int(cols[1].rsplit(":", 1)[1], 16)
    return found


def socket_inodes(pid: int, proc: Path = PROC) -> set[int] | None:
    """Inodes of the sockets the process holds open (None when it is gone)."""
    fd_dir = proc / str(pid) / "fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return None
    inodes: set[int] = set()
    for name in names:
        try:
            target = os.readlink(fd_dir / name)
        except OSError:
            continue  # closed between listdir and readlink
        if target.startswith("socket:[") and target.endswith("]"):
            inodes.add(int(target[8:-1]))
    return inodes


def tcp_tables(proc: Path = PROC) -> list[str]:
    tables = []
    for name in ("tcp", "tcp6"):
        try:
            tables.append((proc / "net" / name).read_text())
        except OSError:
            continue
    return tables


def established_sockets(pids: Iterable[int], skip_ports: Mapping[int, set[int]] | None = None,
                        proc: Path = PROC) -> dict[int, int | None]:
    """Established TCP sockets held by each process, not counting those whose local port is
    one of `skip_ports[pid]` (e.g. its HTTP endpoint, which the harness itself talks to)."""
    established = established_inodes(tcp_tables(proc))
    counts: dict[int, int | None] = {}
    for pid in pids:
        inodes = socket_inodes(pid, proc)
        skip = (skip_ports or {}).get(pid, set())
        counts[pid] = None if inodes is None else \
            sum(1 for inode in inodes if inode in established and established[inode] not in skip)
    return counts


def port_states(tables: Iterable[str], port: int, owners: Mapping[int, set[int]] | None = None) -> dict[str, int]:
    """How many sockets with local `port` are in each TCP state (why a port cannot be bound);
    with `owners` (pid -> its socket inodes), a socket one of them holds counts as
    "<STATE> held by <pid>"."""
    states: dict[str, int] = {}
    for table in tables:
        for line in table.splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == port:
                name = TCP_STATES.get(cols[3], cols[3])
                inode = int(cols[9])
                holder = next((pid for pid, inodes in (owners or {}).items() if inode and inode in inodes), None)
                if holder is not None:
                    name = f"{name} held by {holder}"
                states[name] = states.get(name, 0) + 1
    return states
