"""The Python-column sandbox: user code runs in isolated, limited worker processes.

>>> async with SandboxPool(workers=2, forbidden_paths=[data_dir]) as pool:
...     value = await pool.run('row["n"] = len(row["text"].split())', {"text": "a b"}, "n")

Guarantees, strongest first:

* Always: a separate process per cell (forked from a pre-warmed worker, itself started with
  ``python -I`` and an environment built from scratch: no server secrets, no database URL),
  a new session, rlimits (CPU, address space, open files, file size, processes, no core
  dumps), ``no_new_privs``, non-dumpable, a private temporary directory as cwd/HOME/TMPDIR,
  a wall-clock timeout, and every process the cell started killed and reaped before the
  answer. Results come back as msgpack and are type-checked; nothing is unpickled. A cell
  cannot read what earlier cells left in the worker's memory: the worker never unpacks cell
  data and wipes the frames it forwarded.
* Server running as root: each worker slot runs its cells as its own unprivileged uid
  (claimed at or above ``sandbox_uid_base``, gid nogroup; servers of one machine never share
  a uid, as a lock file under ``/run/rowforge/sandbox-uids`` held for the pool's life says
  which are taken), so file permissions keep the server's data
  directory (mode 0700) and other cells' files out of reach, the cell cannot signal or trace
  the server, the worker or other cells, and ``RLIMIT_NPROC`` bounds a fork bomb exactly.
  The worker also takes a private mount namespace (when it may: CAP_SYS_ADMIN): cell
  directories on a tmpfs capped at ``max_disk_mb``, ``/proc`` remounted ``hidepid=2`` so cells
  see only their own processes, and a read-only path to the interpreter if it lives in a
  private home directory.
* Linux with Landlock (>= 5.13; signal scoping needs >= 6.12): the cell may only read the
  system and Python trees (minus ``forbidden_paths``), write only its own directory, and not
  signal or trace anything outside itself, even with the server's uid.
* Server not root: cells keep the server's uid, and ``RLIMIT_NPROC`` (which counts all of
  that user's tasks) is set to the user's current count plus ``max_processes``, so it bounds
  a fork bomb's growth but shares the budget with the server. Without Landlock as well, cells
  cannot be kept from the server's files or processes: :meth:`SandboxPool.start` then refuses
  to run when ``forbidden_paths`` are given, because it cannot protect them.

* Network (``network="off"`` or ``"public"``): a seccomp filter (:mod:`.syscall_filter`)
  refuses ``bind``, ``listen``, UNIX and other non-IP sockets, io_uring and new namespaces,
  and in ``off`` every ``socket()``. A root server's workers each live in an empty network
  namespace (:mod:`.netns`); in ``public`` its only way out is the pool's egress proxy
  (:mod:`.egress`), which connects only to public addresses, checked after resolution.
  Without a namespace ``public`` degrades to ``off``; without seccomp the pool refuses to
  start. Landlock (ABI >= 4) adds TCP rules: no bind, connect only to the proxy's port.

Needs Linux >= 5.3 (pidfd).
"""

from rowforge.server.sandbox.code_check import check_code
from rowforge.server.sandbox.errors import KINDS, SandboxError
from rowforge.server.sandbox.limits import SandboxLimits
from rowforge.server.sandbox.pool import DEFAULT_PRELOAD, SandboxPool

__all__ = ["DEFAULT_PRELOAD", "KINDS", "SandboxError", "SandboxLimits", "SandboxPool",
           "check_code"]
