"""glibc tuning of the server process (:mod:`rowforge.server.memory`), checked in fresh
interpreters so that nothing else has shaped their heap."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from rowforge.server import memory

#: Allocates and frees 1 MiB buffers (as a transfer does, one chunk at a time) after a
#: small object that pins the heap below them; prints how much of the heap is still
#: mapped after the last free (glibc's mallinfo2().arena), in KiB.
_PROBE = textwrap.dedent("""
    import ctypes, sys
    from rowforge.server import memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = memory._glibc()
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "configure":
        assert memory.configure()
    arena = []
    for _ in range(20):
        buffer = ctypes.create_string_buffer(1024 * 1024)
        del buffer
        arena.append(libc.mallinfo2().arena)
    print(min(arena[5:]) // 1024)
""")


def _heap_kib(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True,
                         check=True, timeout=60)
    return int(out.stdout.strip())


@pytest.mark.skipif(memory._glibc() is None or not hasattr(memory._glibc(), "mallinfo2"),
                    reason="glibc >= 2.33 only (mallinfo2)")
def test_configure_keeps_freed_transfer_buffers_mapped_for_the_next_chunk() -> None:
    """With only the mmap threshold fixed, glibc gives every freed 1 MiB buffer back to the
    kernel (and faults it in, zeroed, for the next one); configure() keeps it."""
    mmap_only = textwrap.dedent("""
        import ctypes
        from rowforge.server import memory
        memory._glibc().mallopt(memory._M_MMAP_THRESHOLD, memory.MMAP_THRESHOLD_BYTES)
    """)
    probe_without = _PROBE.replace('if sys.argv[1] == "configure":\n    assert memory.configure()',
                                   mmap_only)
    out = subprocess.run([sys.executable, "-c", probe_without, "plain"], capture_output=True,
                         text=True, check=True, timeout=60)
    without = int(out.stdout.strip())
    with_configure = _heap_kib("configure")
    assert with_configure >= without + 1024, (without, with_configure)


#: Eight threads allocate at once; prints how many heaps ("arenas") glibc then has
#: (counted in malloc_info's report).
_ARENAS = textwrap.dedent("""
    import ctypes, os, sys, tempfile, threading
    from rowforge.server import memory

    libc = memory._glibc()
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.fopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    if sys.argv[1] == "configure":
        assert memory.configure()
    start = threading.Barrier(8)
    done = threading.Barrier(8)

    def work():
        start.wait()
        blocks = [libc.malloc(1000) for _ in range(2000)]
        done.wait()
        for block in blocks:
            libc.free(block)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    path = tempfile.mktemp()
    f = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, f)
    libc.fclose(f)
    print(open(path).read().count("<heap nr="))
    os.unlink(path)
""")


@pytest.mark.skipif(memory._glibc() is None, reason="glibc only")
def test_configure_caps_the_arenas_threads_allocate_from() -> None:
    def arenas(mode: str) -> int:
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
        out = subprocess.run([sys.executable, "-c", _ARENAS, mode], capture_output=True,
                             text=True, check=True, timeout=60, env=env)
        return int(out.stdout.strip())

    assert arenas("plain") > memory.ARENA_MAX
    assert arenas("configure") <= memory.ARENA_MAX
