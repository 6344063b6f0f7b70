"""Readings from /proc: CPU seconds and RSS of a process, its children, the machine."""

import os
import platform
import resource
import subprocess
import time

from bench.common import BenchError

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (field 3 onwards)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return stat[stat.rindex(")") + 2:].split()


def cpu_seconds(pid):
    """utime + stime of one process, in seconds."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_by_name(pids):
    """{name: CPU seconds summed over its processes} for {name: [pid, ...]}."""
    return {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def settle_rss(pid, seconds=1.5):
    time.sleep(seconds)
    return rss_kb(pid)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and parent_of(entry) == pid]


def parent_of(pid):
    try:
        return int(stat_fields(pid)[1])
    except OSError:
        return None


def first_value(path, prefix, convert=str):
    """`convert` of what follows `prefix` on the first line of `path` that starts with it, or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return convert(line[len(prefix):].strip(" :\t\n"))
    except (OSError, ValueError, IndexError):
        pass
    return None


def tool_version(args):
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def machine_info(tools):
    """The machine, and the versions of `tools` ({name: command line})."""
    mem_kb = first_value("/proc/meminfo", "MemTotal", lambda v: int(v.split()[0]))
    return {
        "nproc": os.cpu_count(),
        "cpu_model": first_value("/proc/cpuinfo", "model name") or "unknown",
        "mem_total_mb": mem_kb // 1024 if mem_kb else None,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **{name: tool_version(args) if args else None for name, args in tools.items()},
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
