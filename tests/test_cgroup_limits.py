"""How the service reads its CPU quota (threads) from cgroups: the process's own cgroup and its
ancestors, v1 and v2, inside a container's namespace and without one. Fake cgroup trees."""

from __future__ import annotations

from pathlib import Path

from app.settings import _cgroup_cpu_quota, _cgroup_dirs


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v2_tree(tmp_path: Path, own: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    write(root / "cgroup.controllers", "cpu memory")
    proc = tmp_path / "proc_cgroup"
    write(proc, f"0::{own}\n")
    return root, proc


def test_container_namespace_reads_its_root(tmp_path):
    root, proc = v2_tree(tmp_path, "/")
    write(root / "cpu.max", "200000 100000\n")
    assert _cgroup_cpu_quota(root, proc) == 2.0


def test_no_quota_is_none(tmp_path):
    root, proc = v2_tree(tmp_path, "/")
    write(root / "cpu.max", "max 100000\n")
    assert _cgroup_cpu_quota(root, proc) is None


def test_v2_without_namespace_reads_the_process_own_cgroup(tmp_path):
    # A pod's container seen from the node's namespace: the quota is on the pod's cgroup, not the root.
    root, proc = v2_tree(tmp_path, "/kubepods.slice/pod1/container1")
    write(root / "cpu.max", "max 100000\n")
    write(root / "kubepods.slice/pod1/cpu.max", "150000 100000\n")
    write(root / "kubepods.slice/pod1/container1/cpu.max", "max 100000\n")
    assert _cgroup_cpu_quota(root, proc) == 1.5


def test_the_tightest_quota_on_the_path_wins(tmp_path):
    root, proc = v2_tree(tmp_path, "/a/b")
    write(root / "a/cpu.max", "100000 100000\n")
    write(root / "a/b/cpu.max", "400000 100000\n")
    assert _cgroup_cpu_quota(root, proc) == 1.0


def test_v1_nested_cpu_controller(tmp_path):
    root = tmp_path / "cgroup"
    proc = tmp_path / "proc_cgroup"
    write(proc, "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n1:name=systemd:/\n")
    write(root / "cpu/cpu.cfs_quota_us", "-1\n")
    write(root / "cpu/cpu.cfs_period_us", "100000\n")
    write(root / "cpu/docker/abc/cpu.cfs_quota_us", "300000\n")
    write(root / "cpu/docker/abc/cpu.cfs_period_us", "100000\n")
    assert _cgroup_cpu_quota(root, proc) == 3.0
    assert _cgroup_dirs("memory", root, proc) == [root / "memory/x", root / "memory"]
