"""The OS-level second wall of the process backend: what a worker process gives up before
it runs any task code.

- **seccomp** (through libseccomp's own Python binding, the `mephi42-seccomp` wheel, which
  links libseccomp statically): no exec, no new processes (only threads), no sockets, no
  ptrace or cross-process memory access, no signals to other processes, no file creation,
  removal, renaming or opening for write, no mounts, namespaces, kernel modules, BPF,
  perf, io_uring or keyrings. Refused calls fail with EPERM (ENOSYS for clone3, so glibc
  falls back to a clone the filter can read), which Python turns into an exception in the
  task, not a dead worker.
- **Landlock** where the kernel has it (ABI 1+; TCP and abstract-socket/signal scoping on
  newer ABIs): the file system becomes read-only and limited to the Python runtime's
  library directories and the VM's bundle directories.
- **rlimits**: address space, open files, processes (counted per user by the kernel, so
  the limit is set from the system's current count plus a margin), no core dumps, and a
  CPU-seconds limit re-armed before each run (`arm_cpu`). Not FSIZE: the worker writes its
  results to a pipe and may write diagnostics to an inherited stderr that is a file;
  opening anything for write is refused by seccomp and Landlock.

Applied once per worker process, before its first thread starts, so every thread the
guest, the engine or numpy starts later inherits it; its cost is measured by
`bench/vm.py` (per worker start, nothing per run but one setrlimit).
"""

from __future__ import annotations

import errno
import os
import resource
import sys
import time
from typing import Any

NOFILE = 256
NPROC_MARGIN = 64
DEFAULT_AS_MB = 4096

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on every
# architecture (they were added to the unified table).
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_FS_EXECUTE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 2, 1 << 3
_FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_PR_SET_NO_NEW_PRIVS = 38

# What a worker reads besides the Python runtime and the bundles: shared libraries (the
# engine's libstdc++, numpy's OpenBLAS), the loader's cache, and CPU topology that
# OpenBLAS and the engine probe; its own memory counter for the memory budget.
SYSTEM_READ_DIRS = (
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/sys/devices/system/cpu",
)
SYSTEM_READ_FILES = (
    "/etc/ld.so.cache",
    "/proc/self/statm",
    "/proc/cpuinfo",
    "/dev/null",
    "/dev/urandom",
)

# Syscalls a task never needs. Names unknown to this architecture are skipped.
DENIED_SYSCALLS = (
    # other programs and processes
    "execve",
    "execveat",
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_open",
    "pidfd_getfd",
    "pidfd_send_signal",
    "tkill",
    # network
    "socket",
    "socketpair",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    # writing to the file system
    "creat",
    "openat2",  # its flags sit in a struct the filter cannot read; glibc falls back to openat
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "rmdir",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "truncate",
    "mknod",
    "mknodat",
    "utime",
    "utimes",
    "utimensat",
    "futimesat",
    "name_to_handle_at",
    "open_by_handle_at",
    "memfd_create",
    # the system
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "setns",
    "unshare",
    "swapon",
    "swapoff",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "iopl",
    "ioperm",
    "acct",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "sethostname",
    "setdomainname",
    "quotactl",
    "personality",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fanotify_init",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "capset",
)
_CLONE_THREAD = 0x00010000
_WRITE_FLAGS = (os.O_WRONLY, os.O_RDWR, os.O_CREAT, os.O_TRUNC, os.O_APPEND)


_LIBC: Any = None


def _libc() -> Any:
    # ctypes is imported here, not at module import: only a walled worker pays for it,
    # and apply_ms counts it.
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.syscall.restype = ctypes.c_long
    return _LIBC


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or this is not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    import ctypes

    abi = _libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(0, int(abi))


def seccomp_available() -> bool:
    try:
        import seccomp  # noqa: F401
    except ImportError:
        return False
    return sys.platform.startswith("linux")


def available() -> dict[str, Any]:
    """What this machine can give a worker process: seccomp, the Landlock ABI, rlimits."""
    return {"seccomp": seccomp_available(), "landlock": landlock_abi(), "rlimits": True}


def _seccomp(pid: int) -> None:
    import seccomp

    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    eperm = seccomp.ERRNO(errno.EPERM)

    def deny(name: str, *args: Any, action: Any = eperm) -> None:
        try:
            f.add_rule(action, name, *args)
        except (RuntimeError, ValueError, OSError):
            pass  # no such syscall on this architecture

    for name in DENIED_SYSCALLS:
        deny(name)
    deny("clone3", action=seccomp.ERRNO(errno.ENOSYS))
    # A thread, never a process: clone without CLONE_THREAD is refused.
    deny("clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_THREAD, 0))
    # Signals only to itself.
    deny("kill", seccomp.Arg(0, seccomp.NE, pid))
    deny("tgkill", seccomp.Arg(0, seccomp.NE, pid))
    # open/openat for writing; the flags are argument 1 of open, 2 of openat.
    for flag in _WRITE_FLAGS:
        deny("open", seccomp.Arg(1, seccomp.MASKED_EQ, flag, flag))
        deny("openat", seccomp.Arg(2, seccomp.MASKED_EQ, flag, flag))
    f.set_attr(seccomp.Attr.CTL_TSYNC, 1)  # every thread of the process
    f.load()


def _landlock(abi: int, read_dirs: tuple[str, ...], read_files: tuple[str, ...]) -> bool:
    import ctypes

    libc = _libc()
    fs = _FS_RIGHTS_BY_ABI[max(k for k in _FS_RIGHTS_BY_ABI if k <= abi)]
    attr = (ctypes.c_uint64 * 3)(
        fs,
        (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
        (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        return False
    try:

        class PathBeneath(ctypes.Structure):
            _pack_ = 1
            _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))

        for path, rights in [(d, _FS_READ_FILE | _FS_READ_DIR) for d in read_dirs] + [
            (p, _FS_READ_FILE) for p in read_files
        ]:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # gone: nothing to allow
            try:
                rule = PathBeneath(rights, fd)
                libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) == 0
    finally:
        os.close(ruleset)


def _rlimits(memory_mb: int | None) -> dict[str, int]:
    def lower(which: int, value: int) -> int:
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
        return value

    out = {"as_mb": lower(resource.RLIMIT_AS, (memory_mb or DEFAULT_AS_MB) << 20) >> 20}
    out["nofile"] = lower(resource.RLIMIT_NOFILE, NOFILE)
    out["core"] = lower(resource.RLIMIT_CORE, 0)
    # RLIMIT_NPROC counts every task of the user, system-wide: the current total of all
    # tasks (an upper bound of the user's) plus a margin leaves room for the engine's and
    # numpy's threads and none for a fork bomb.
    try:
        with open("/proc/loadavg") as f:
            total = int(f.read().split()[3].split("/")[1])
        out["nproc"] = lower(resource.RLIMIT_NPROC, total + NPROC_MARGIN)
    except (OSError, ValueError, IndexError):
        pass
    return out


def apply(
    read_dirs: tuple[str, ...], memory_mb: int | None = None, *, landlock: bool = True
) -> dict[str, Any]:
    """Wall in the calling process (call it before starting threads); what was applied,
    and how long applying it took (`apply_ms`, measured by bench/vm.py)."""
    t0 = time.perf_counter()
    report: dict[str, Any] = {"rlimits": _rlimits(memory_mb)}
    abi = landlock_abi() if landlock else 0
    dirs = tuple(read_dirs) + SYSTEM_READ_DIRS
    report["landlock"] = abi if abi and _landlock(abi, dirs, SYSTEM_READ_FILES) else 0
    report["seccomp"] = False
    if seccomp_available():
        _seccomp(os.getpid())
        report["seccomp"] = True
    report["apply_ms"] = (time.perf_counter() - t0) * 1000
    return report


def arm_cpu(seconds: float) -> None:
    """Allow this process `seconds` more CPU time (all threads) before SIGXCPU ends it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    soft = int(used + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY and soft > hard:
        return  # cannot raise it past the hard limit; the host's kill still applies
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
