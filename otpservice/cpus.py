"""How many CPUs this process may really use: its affinity, capped by its cgroup's CPU quota.

``os.cpu_count()`` counts the host's CPUs. A container limited with ``--cpus 1.5`` (or a systemd
unit with ``CPUQuota=150%``) sees every host CPU in its affinity mask, yet the kernel throttles it
to the quota; sizing the argon2 thread pool by the host would only queue hashes and hold their
memory. Written here rather than taken from a library: the ones that read cgroups (loky, for one)
read fixed absolute paths, and this is a few lines of file reading that tests can point at a
directory of fake cgroup files through ``root``.
"""

from __future__ import annotations

import os
from pathlib import Path

# cgroup v1 mounts the cpu controller alone or joined with cpuacct, depending on the distribution.
_V1_CPU_DIRS = ("sys/fs/cgroup/cpu", "sys/fs/cgroup/cpu,cpuacct")
_V2_MOUNT = "sys/fs/cgroup"


def usable_cores(root: Path = Path("/")) -> int:
    """CPUs this process may run on: the affinity count, capped by the cgroup quota, at least 1."""
    quota = cgroup_cpu_quota(root)
    affinity = affinity_count()
    return max(1, affinity if quota is None else min(affinity, quota))


def affinity_count() -> int:
    """CPUs in this process's affinity mask (as taskset and cpusets set it), at least 1."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # platforms without sched_getaffinity (macOS)
        return os.cpu_count() or 1


def cgroup_cpu_quota(root: Path = Path("/")) -> int | None:
    """The CPUs the CFS quota allows, rounded up (1.5 -> 2); None without a quota or readable files.

    cgroup v2: ``cpu.max`` of this process's cgroup and of each ancestor (a parent's quota binds its
    children too); cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of the mounted cgroup.
    The tightest of those found wins.
    """
    quotas = [quota for quota in (*_v2_quotas(root), _v1_quota(root)) if quota is not None]
    return min(quotas, default=None)


def _v2_quotas(root: Path) -> list[int | None]:
    mount = root / _V2_MOUNT
    directory = mount / _own_v2_cgroup(root)
    quotas = []
    while True:
        quota_line = _read(directory / "cpu.max").split()
        if len(quota_line) == 2:
            quotas.append(_cpus(quota_line[0], quota_line[1]))
        if directory == mount or mount not in directory.parents:
            return quotas
        directory = directory.parent


def _own_v2_cgroup(root: Path) -> str:
    """This process's cgroup v2 path relative to the mount ("" in a container's own namespace)."""
    for line in _read(root / "proc/self/cgroup").splitlines():
        hierarchy, _, path = line.partition("::")
        if hierarchy == "0":  # the unified (v2) hierarchy is always number 0
            relative = path.strip().strip("/")
            return "" if ".." in relative.split("/") else relative
    return ""


def _v1_quota(root: Path) -> int | None:
    for name in _V1_CPU_DIRS:
        directory = root / name
        quota = _cpus(_read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us"))
        if quota is not None:
            return quota
    return None


def _cpus(quota: str, period: str) -> int | None:
    """CPUs a quota of QUOTA microseconds per PERIOD allows, rounded up; None for max, -1 or garbage."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max" (v2's no quota), an empty or missing file, or garbage
        return None
    if quota_us <= 0 or period_us <= 0:  # v1 writes -1 for no quota
        return None
    return -(-quota_us // period_us)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""
