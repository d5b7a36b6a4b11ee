"""CPU counting honours the cgroup CPU quota (v2 and v1) as well as the affinity mask."""

from __future__ import annotations

from pathlib import Path

import pytest

from otpservice.cpus import affinity_count, cgroup_cpu_quota, usable_cores


def fake_root(tmp_path: Path, files: dict[str, str]) -> Path:
    """A directory laid out like / holding only the given cgroup (and /proc) files."""
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


V2 = "sys/fs/cgroup/cpu.max"
V1 = "sys/fs/cgroup/cpu/cpu.cfs_"
V1_JOINED = "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({V2: "150000 100000\n"}, 2),  # 1.5 CPUs round up
        ({V2: "100000 100000\n"}, 1),
        ({V2: "50000 100000\n"}, 1),
        ({V2: "max 100000\n"}, None),
        ({V1 + "quota_us": "250000\n", V1 + "period_us": "100000\n"}, 3),
        ({V1_JOINED + "quota_us": "100000\n", V1_JOINED + "period_us": "100000\n"}, 1),
        ({V1 + "quota_us": "-1\n", V1 + "period_us": "100000\n"}, None),
        ({V2: "300000 100000", V1 + "quota_us": "100000", V1 + "period_us": "100000"}, 1),  # tightest
        (
            {
                "proc/self/cgroup": "0::/system.slice/otpservice.service\n",
                "sys/fs/cgroup/system.slice/otpservice.service/cpu.max": "400000 100000",
                "sys/fs/cgroup/system.slice/cpu.max": "200000 100000",  # a parent's quota binds too
            },
            2,
        ),
        ({"proc/self/cgroup": "0::/../..\n", V2: "100000 100000"}, 1),
    ],
    ids=[
        "v2-fraction",
        "v2-one",
        "v2-half",
        "v2-max",
        "v1",
        "v1-cpu,cpuacct",
        "v1-no-quota",
        "v1-and-v2",
        "v2-nested",
        "v2-odd-path",
    ],
)
def test_the_cgroup_quota_is_read_and_rounded_up(
    tmp_path: Path, files: dict[str, str], expected: int | None
) -> None:
    """cpu.max (v2, ancestors too) and cfs_quota_us / cfs_period_us (v1) give whole CPUs; no quota is None."""
    assert cgroup_cpu_quota(fake_root(tmp_path, files)) == expected


@pytest.mark.parametrize(
    "files",
    [
        {},
        {V2: ""},
        {V2: "lots of cpus"},
        {V2: "150000"},
        {V2: "150000 0"},
        {V2: "\xff\xfe"},
        {V1 + "quota_us": "100000"},  # no period
        {V1 + "quota_us": "abc", V1 + "period_us": "100000"},
        {V1 + "quota_us": "0", V1 + "period_us": "100000"},
    ],
    ids=["missing", "empty", "words", "one-field", "zero-period", "latin", "no-period", "garbage", "zero"],
)
def test_missing_or_garbage_cgroup_files_mean_no_quota(tmp_path: Path, files: dict[str, str]) -> None:
    """Without readable quota files the affinity count stands alone, never an error or zero."""
    root = fake_root(tmp_path, files)
    assert cgroup_cpu_quota(root) is None
    assert usable_cores(root) == affinity_count() >= 1


def test_usable_cores_is_the_smaller_of_quota_and_affinity(tmp_path: Path) -> None:
    """A quota below the affinity count caps it; one above it changes nothing."""
    assert usable_cores(fake_root(tmp_path / "tight", {V2: "100000 100000"})) == 1
    generous = fake_root(tmp_path / "generous", {V2: f"{(affinity_count() + 4) * 100000} 100000"})
    assert usable_cores(generous) == affinity_count()


def test_this_machine_gives_at_least_one_core() -> None:
    """On the real filesystem the count is between 1 and the affinity count."""
    assert 1 <= usable_cores() <= affinity_count()
