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
  (``sandbox_uid_base + slot``, gid nogroup), so file permissions keep the server's data
  directory (mode 0700) and other cells' files out of reach, the cell cannot signal or trace
  the server, the worker or other cells, and ``RLIMIT_NPROC`` bounds a fork bomb exactly.
* Linux with Landlock (>= 5.13; signal scoping needs >= 6.12): the cell may only read the
  system and Python trees (minus ``forbidden_paths``), write only its own directory, and not
  signal or trace anything outside itself, even with the server's uid.
* Server not root and no Landlock: cells run as the server's user. They cannot be kept from
  its files or processes, and ``RLIMIT_NPROC`` (which counts all of that user's tasks) is set
  to the user's current count plus ``max_processes``. :meth:`SandboxPool.start` refuses to run
  in this mode when ``forbidden_paths`` are given, because it cannot protect them.

Network access is not restricted (the seed's examples fetch web pages).
"""

from rowforge.server.sandbox.code_check import check_code
from rowforge.server.sandbox.errors import KINDS, SandboxError
from rowforge.server.sandbox.limits import SandboxLimits
from rowforge.server.sandbox.pool import DEFAULT_PRELOAD, SandboxPool

__all__ = ["DEFAULT_PRELOAD", "KINDS", "SandboxError", "SandboxLimits", "SandboxPool",
           "check_code"]
