"""The Python-column sandbox with real worker processes: the happy path and every attack.

Each attack must end as a SandboxError with a clear message, leave no process behind, and
leave the pool (and this process, the "server") healthy.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from rowforge.server.errors import Internal, InvalidArgument, Unavailable
from rowforge.server.sandbox import SandboxError, SandboxLimits, SandboxPool
from rowforge.server.sandbox.landlock import abi_version

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "s3cr3t-the-cells-must-never-see"
SERVER_SECRETS = {
    "ROWFORGE_DATABASE_URL": "postgresql://rowforge:hunter2@db/rowforge",
    "OPENAI_API_KEY": "sk-test-never-leak-this",
    "ROWFORGE_SIGNING_TOKEN": "tok-never-leak-this",
}
LANDLOCK = abi_version() > 0
needs_landlock = pytest.mark.skipif(not LANDLOCK, reason="Landlock is not enabled in this kernel")


# -- helpers ---------------------------------------------------------------------------------

def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, real uid, state) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", encoding="utf-8") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        out[int(name)] = (int(fields["PPid"]), int(fields["Uid"].split()[0]),
                          fields["State"].split()[0])
    return out


def cell_processes(pool: SandboxPool) -> list[int]:
    """Every process a cell could have left: descendants of the workers, or a sandbox uid.

    (``/proc/<pid>`` of a cell is owned by root because cells are not dumpable, so the uid is
    read from ``status``.)
    """
    procs = _processes()
    workers = set(pool.worker_pids)
    uids = set(pool.sandbox_uids)
    found = []
    for pid, (ppid, uid, _) in procs.items():
        if uid in uids:
            found.append(pid)
            continue
        seen = set()
        while ppid and ppid not in seen:
            if ppid in workers:
                found.append(pid)
                break
            seen.add(ppid)
            ppid = procs.get(ppid, (0, 0, ""))[0]
    return found


async def wait_until_no_cell_processes(pool: SandboxPool, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while cell_processes(pool):
        assert time.monotonic() < deadline, f"stray cell processes: {cell_processes(pool)}"
        await asyncio.sleep(0.02)


async def run_error(pool: SandboxPool, code: str, row: dict | None = None, column: str = "out",
                    **kwargs: float) -> SandboxError:
    with pytest.raises(SandboxError) as info:
        await pool.run(code, row or {}, column, **kwargs)
    return info.value


def assert_denied_or_hidden(error: SandboxError) -> None:
    """Denied, or (``/proc`` remounted with hidepid=2) not even visible."""
    denied = error.kind == "forbidden" and "Permission denied" in error.message
    hidden = error.kind == "exception" and "No such file" in error.message
    assert denied or hidden, error


async def assert_healthy(pool: SandboxPool) -> None:
    assert await pool.run('row["out"] = row["a"] * 2', {"a": 21}, "out") == 42
    assert cell_processes(pool) == []


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dirs() -> Iterator[dict[str, Path]]:
    """A server-like tree outside pytest's private tmp: a 0700 data dir, a world-readable
    directory that is nevertheless forbidden, and a public one next to them."""
    base = Path(tempfile.mkdtemp(prefix="rowforge-sandbox-test-"))
    base.chmod(0o755)
    data = base / "data"
    data.mkdir(mode=0o700)
    (data / "secret.txt").write_text(SECRET)
    (data / "secret.txt").chmod(0o600)
    exposed = base / "exposed-data"
    exposed.mkdir(mode=0o755)
    (exposed / "secret.txt").write_text(SECRET)
    (exposed / "secret.txt").chmod(0o644)
    public = base / "public"
    public.mkdir(mode=0o755)
    (public / "hello.txt").write_text("hello")
    (public / "hello.txt").chmod(0o644)
    yield {"base": base, "data": data, "exposed": exposed, "public": public}
    shutil.rmtree(base)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool(dirs: dict[str, Path]) -> AsyncIterator[SandboxPool]:
    saved = {key: os.environ.get(key) for key in SERVER_SECRETS}
    os.environ.update(SERVER_SECRETS)  # the server's environment while the workers start
    try:
        sandbox = SandboxPool(
            workers=2,
            limits=SandboxLimits(timeout_s=5, memory_mb=400),
            forbidden_paths=[str(dirs["data"]), str(dirs["exposed"])],
            extra_read_paths=[str(dirs["base"])],
        )
        await sandbox.start()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield sandbox
    await sandbox.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def small_pool() -> AsyncIterator[SandboxPool]:
    """One worker (so consecutive cells share it) and a 1 s CPU limit."""
    limits = SandboxLimits(cpu_s=1, timeout_s=10, max_file_size_mb=8, max_disk_mb=20)
    async with SandboxPool(workers=1, limits=limits,
                           preload=("numpy", "no_such_module_for_the_sandbox")) as sandbox:
        yield sandbox


# -- the happy path --------------------------------------------------------------------------

async def test_seed_word_count(pool: SandboxPool) -> None:
    code = 'row["word_count"] = str(len(row["output"].split()))'
    assert await pool.run(code, {"output": "three little words"}, "word_count") == "3"


NAME_MATCHING = """
from difflib import SequenceMatcher
try:
    a = row["declared"].upper()
    b = row["extracted"].upper()
    ratio = SequenceMatcher(None, a, b).ratio()
    row["match"] = f"{'MATCH' if ratio > 0.85 else 'MISMATCH'} ({ratio*100:.0f}%)"
except Exception as e:
    row["match"] = f"ERROR: {str(e)}"
"""


async def test_seed_name_matching_with_difflib(pool: SandboxPool) -> None:
    row = {"declared": "Jonathan Smith", "extracted": "JONATHAN SMITH"}
    assert await pool.run(NAME_MATCHING, row, "match") == "MATCH (100%)"
    row = {"declared": "Jonathan Smith", "extracted": "Maria Garcia"}
    assert (await pool.run(NAME_MATCHING, row, "match")).startswith("MISMATCH (")
    # The seed's own error handling turns a bad input into a value, not a cell error.
    assert (await pool.run(NAME_MATCHING, {"declared": None, "extracted": "x"}, "match")
            ).startswith("ERROR: ")


async def test_values_round_trip(pool: SandboxPool) -> None:
    value = {"text": "héllo ✓", "n": -(2**62), "f": 2.5, "yes": True, "none": None,
             "blob": bytes(range(256)), "nested": [[1, "a"], {"k": [b"\x00"]}]}
    assert await pool.run('row["out"] = row["in"]', {"in": value}, "out") == value
    assert await pool.run('row["out"] = row["img"][::-1]', {"img": b"\x89PNG\x00\xff"},
                          "out") == b"\xff\x00GNP\x89"
    assert await pool.run('row["out"] = (1, 2)', {}, "out") == [1, 2]
    assert await pool.run('row["out"] = bytearray(b"ab")', {}, "out") == b"ab"


async def test_nested_dicts_keep_their_keys(pool: SandboxPool) -> None:
    row = {"meta": {"tags": ["a", "b"], "scores": {"x": 1.5}}}
    assert await pool.run("row['out'] = sorted(row['meta']['scores'])", row, "out") == ["x"]


async def test_numpy_results_become_plain_values(pool: SandboxPool) -> None:
    code = "import numpy as np\nrow['out'] = {'sum': np.int64(6), 'arr': np.arange(3)}"
    assert await pool.run(code, {}, "out") == {"sum": 6, "arr": [0, 1, 2]}


async def test_the_code_may_rebind_row(pool: SandboxPool) -> None:
    assert await pool.run('row = {"out": "new dict"}', {"a": 1}, "out") == "new dict"


async def test_sys_exit_zero_ends_the_code_like_a_script(pool: SandboxPool) -> None:
    assert await pool.run('import sys\nrow["out"] = 1\nsys.exit(0)', {}, "out") == 1


async def test_files_stay_in_a_private_directory_that_is_removed(pool: SandboxPool) -> None:
    code = """
import os, tempfile
with open("scratch.txt", "w") as f:
    f.write("x")
with tempfile.NamedTemporaryFile(dir=None) as t:
    t.write(b"y")
row["out"] = [os.getcwd(), os.environ["HOME"], tempfile.gettempdir(), os.listdir(".")]
"""
    cwd, home, tmp, listing = await pool.run(code, {}, "out")
    assert cwd == home == tmp
    assert listing == ["scratch.txt"]
    # Seen through the workers' own mount namespaces (the cell dir may live on their tmpfs).
    for worker in pool.worker_pids:
        assert await asyncio.to_thread(os.path.isdir, f"/proc/{worker}/root{Path(cwd).parent}")
        assert not await asyncio.to_thread(os.path.exists, f"/proc/{worker}/root{cwd}"), (
            "the cell's directory must be removed")
    # A later cell starts empty.
    assert await pool.run('import os\nrow["out"] = os.listdir(".")', {}, "out") == []


# -- cell errors -----------------------------------------------------------------------------

async def test_exception_names_type_message_and_line(pool: SandboxPool) -> None:
    error = await run_error(pool, "a = 1\nb = 0\nrow['out'] = a / b\n")
    assert error.kind == "exception"
    assert error.message == ("Python column 'out' raised ZeroDivisionError: division by zero "
                             "(line 3)")


async def test_syntax_error(pool: SandboxPool) -> None:
    error = await run_error(pool, "row['out'] = (\n")
    assert error.kind == "exception"
    assert "syntax error" in error.message and "line 1" in error.message


async def test_missing_assignment(pool: SandboxPool) -> None:
    error = await run_error(pool, "x = 1", column="total")
    assert (error.kind, error.message) == ("no_output",
                                           "Python column 'total' did not assign row['total']")


async def test_unstorable_values_are_refused_clearly(pool: SandboxPool) -> None:
    error = await run_error(pool, "row['out'] = {1, 2}")
    assert error.kind == "exception"
    assert "assigned a set, which cannot be stored" in error.message
    error = await run_error(pool, "row['out'] = [object()]")
    assert "a list holding a object" in error.message
    error = await run_error(pool, "row['out'] = {1: 'a'}")
    assert error.kind == "exception" and "non-string key 1" in error.message
    error = await run_error(pool, "row['out'] = 2**70")
    assert error.kind == "exception" and "cannot be stored" in error.message


# -- attacks ---------------------------------------------------------------------------------

async def test_infinite_loop_times_out(pool: SandboxPool) -> None:
    started = time.monotonic()
    error = await run_error(pool, "while True:\n    pass", timeout_s=1)
    assert time.monotonic() - started < 3
    assert (error.kind, error.message) == ("timeout", "Python column 'out' timed out after 1 s")
    await assert_healthy(pool)


async def test_cpu_limit(small_pool: SandboxPool) -> None:
    error = await run_error(small_pool, "while True:\n    pass")
    assert error.kind == "timeout"
    assert error.message == "Python column 'out' used more than its CPU time limit (1 s)"
    # Ignoring SIGXCPU only postpones the hard limit's SIGKILL.
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    error = await run_error(small_pool, code)
    assert error.kind == "timeout" and "CPU time limit" in error.message
    await assert_healthy(small_pool)


async def test_file_size_and_disk_limits(small_pool: SandboxPool) -> None:
    error = await run_error(small_pool, "open('big', 'wb').write(bytes(9 * 2**20))")
    assert error.kind == "exception" and "File too large" in error.message
    if not small_pool.isolation.get("disk_quota_mb"):
        pytest.skip("no tmpfs for cell directories here (the server is not root)")
    code = "for i in range(3):\n    open(f'f{i}', 'wb').write(bytes(8 * 2**20))"
    error = await run_error(small_pool, code)
    assert error.kind == "exception" and "No space left on device" in error.message
    # The next cell has the whole quota again.
    assert await small_pool.run("open('f', 'wb').write(bytes(8 * 2**20))\nrow['out'] = 1",
                                {}, "out") == 1


@pytest.mark.parametrize("code", [
    "x = ' ' * 10**10",
    "hoard = []\nwhile True:\n    hoard.append(bytearray(10**7))",
    "import numpy as np\nrow['out'] = np.ones((10**5, 10**5))",
])
async def test_memory_bomb(pool: SandboxPool, code: str) -> None:
    error = await run_error(pool, code)
    assert (error.kind, error.message) == (
        "memory", "Python column 'out' exceeded the memory limit (400 MB)")
    await assert_healthy(pool)


async def test_fork_bomb_is_contained(pool: SandboxPool) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    error = await run_error(pool, code, timeout_s=1.5)
    assert error.kind == "timeout"
    assert cell_processes(pool) == []
    # The plain version runs into RLIMIT_NPROC and fails on its own.
    error = await run_error(pool, "import os\nwhile True:\n    os.fork()", timeout_s=3)
    assert error.kind in ("exception", "timeout"), error
    assert cell_processes(pool) == []
    await assert_healthy(pool)


async def test_processes_started_by_a_cell_do_not_outlive_it(pool: SandboxPool) -> None:
    code = """
import os, subprocess, time
subprocess.Popen(["sleep", "60"], start_new_session=True)
if os.fork() == 0:          # a classic daemon: fork, new session, fork again
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
row["out"] = "done"
"""
    assert await pool.run(code, {}, "out") == "done"
    assert cell_processes(pool) == []


async def test_sys_exit_and_os_exit(pool: SandboxPool) -> None:
    error = await run_error(pool, "import sys\nsys.exit(3)")
    assert (error.kind, error.message) == ("exit", "Python column 'out' called sys.exit(3)")
    error = await run_error(pool, "import os\nos._exit(3)")
    assert error.kind == "exit"
    assert error.message == "Python column 'out' exited with status 3 before returning row['out']"
    await assert_healthy(pool)


async def test_huge_output(pool: SandboxPool) -> None:
    error = await run_error(pool, "row['out'] = 'x' * (100 * 2**20)")
    assert error.kind == "output_too_large"
    assert error.message == ("Python column 'out' produced 100 MB of output, more than the "
                             "16 MB limit")
    await assert_healthy(pool)


async def test_forged_result_frames(pool: SandboxPool) -> None:
    """The result pipe is reachable from user code: the worker and pool must not trust it."""
    claim_1gb = "import os, time\nos.write(3, (2**30).to_bytes(4, 'big'))\ntime.sleep(30)"
    error = await run_error(pool, claim_1gb)
    assert error.kind == "output_too_large" and "1024 MB" in error.message
    garbage = "import os\nos.write(3, (5).to_bytes(4, 'big') + b'\\xc1oops')\nos._exit(0)"
    error = await run_error(pool, garbage)
    assert (error.kind, error.message) == ("crashed",
                                           "Python column 'out' sent back a malformed result")
    truncated = "import os\nos.write(3, (50).to_bytes(4, 'big') + b'abc')\nos._exit(0)"
    error = await run_error(pool, truncated)
    assert error.kind == "crashed" and "incomplete" in error.message
    await assert_healthy(pool)


async def test_killing_the_parent_does_not_kill_the_server(pool: SandboxPool) -> None:
    workers = sorted(pool.worker_pids)
    error = await run_error(pool, "import os\nos.kill(os.getppid(), 9)")
    assert error.kind == "forbidden" and "Operation not permitted" in error.message
    error = await run_error(pool, "import os\nos.kill(row['server'], 9)", {"server": os.getpid()})
    assert error.kind == "forbidden"
    assert sorted(pool.worker_pids) == workers
    await assert_healthy(pool)


async def test_server_environment_is_unreadable(pool: SandboxPool) -> None:
    error = await run_error(pool, "row['out'] = open(f'/proc/{row[\"pid\"]}/environ').read()",
                            {"pid": os.getpid()})
    assert_denied_or_hidden(error)
    # The worker's environment is scrubbed too, and readable or not, holds no secret.
    code = "import os\nrow['out'] = open(f'/proc/{os.getppid()}/environ', 'rb').read()"
    try:
        leaked = await pool.run(code, {}, "out")
    except SandboxError as error:
        assert_denied_or_hidden(error)
    else:
        assert all(v.encode() not in leaked for v in SERVER_SECRETS.values())


async def test_cells_see_only_their_own_processes(pool: SandboxPool) -> None:
    if not pool.isolation.get("processes_hidden"):
        pytest.skip("/proc could not be remounted with hidepid here")
    code = "import os\nrow['out'] = [int(p) for p in os.listdir('/proc') if p.isdigit()]"
    visible = await pool.run(code, {}, "out")
    assert os.getpid() not in visible and not set(pool.worker_pids) & set(visible)
    assert len(visible) == 1, visible  # the cell itself


async def test_cell_environment_holds_no_server_secret(pool: SandboxPool) -> None:
    env = await pool.run("import os\nrow['out'] = dict(os.environ)", {}, "out")
    assert not any(key.startswith("ROWFORGE_") or key.endswith(("_KEY", "_TOKEN", "_URL"))
                   for key in env), env
    assert not any(secret in value for secret in SERVER_SECRETS.values()
                   for value in env.values())
    assert env["HOME"] == env["TMPDIR"]
    for pid in pool.worker_pids:  # and the worker processes themselves
        environ = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
        assert all(v.encode() not in environ for v in SERVER_SECRETS.values())


async def test_data_directory_is_unreadable(pool: SandboxPool, dirs: dict[str, Path]) -> None:
    secret = dirs["data"] / "secret.txt"
    error = await run_error(pool, "row['out'] = open(row['p']).read()", {"p": str(secret)})
    assert error.kind == "forbidden"
    assert error.message.startswith("Python column 'out' was denied access: [Errno 13]")
    error = await run_error(pool, "import os\nrow['out'] = os.listdir(row['p'])",
                            {"p": str(dirs["data"])})
    assert error.kind == "forbidden"
    # With the seed's try/except the error becomes the value: still no secret in it.
    code = ("try:\n    row['out'] = open(row['p']).read()\n"
            "except Exception as e:\n    row['out'] = f'ERROR: {e}'")
    value = await pool.run(code, {"p": str(secret)}, "out")
    assert value.startswith("ERROR: [Errno 13] Permission denied") and SECRET not in value


@needs_landlock
async def test_forbidden_path_stays_hidden_even_when_world_readable(
        pool: SandboxPool, dirs: dict[str, Path]) -> None:
    assert await pool.run("row['out'] = open(row['p']).read()",
                          {"p": str(dirs["public"] / "hello.txt")}, "out") == "hello"
    error = await run_error(pool, "row['out'] = open(row['p']).read()",
                            {"p": str(dirs["exposed"] / "secret.txt")})
    assert error.kind == "forbidden"


@needs_landlock
async def test_cells_write_only_in_their_own_directory(pool: SandboxPool) -> None:
    error = await run_error(pool, "open('/tmp/rowforge-cell-was-here', 'w')")
    assert error.kind == "forbidden"
    assert not await asyncio.to_thread(os.path.exists, "/tmp/rowforge-cell-was-here")


async def test_start_refuses_when_a_forbidden_path_is_readable(dirs: dict[str, Path]) -> None:
    if os.geteuid() != 0 and not LANDLOCK:
        pytest.skip("needs root or Landlock to be meaningful")
    # Without Landlock only file permissions protect: a world-readable dir is not protected.
    sandbox = SandboxPool(workers=1, landlock=False, preload=(),
                          forbidden_paths=[str(dirs["exposed"])])
    with pytest.raises(Internal, match=r"could read .*exposed-data"):
        await sandbox.start()
    with pytest.raises(Unavailable):
        await sandbox.run("row['out'] = 1", {}, "out")


async def test_cancellation_kills_the_running_code(pool: SandboxPool) -> None:
    task = asyncio.create_task(pool.run("import time\ntime.sleep(60)", {}, "out", timeout_s=60))
    deadline = time.monotonic() + 5
    while not cell_processes(pool):
        assert time.monotonic() < deadline, "the cell never started"
        await asyncio.sleep(0.01)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until_no_cell_processes(pool, within=2)
    assert time.monotonic() - started < 2
    await assert_healthy(pool)


async def test_cells_run_concurrently_on_all_workers(pool: SandboxPool) -> None:
    code = "import os, time\ntime.sleep(0.25)\nrow['out'] = [row['i'], os.getpid()]"
    started = time.monotonic()
    results = await asyncio.gather(*(pool.run(code, {"i": i}, "out") for i in range(20)))
    elapsed = time.monotonic() - started
    assert [i for i, _ in results] == list(range(20))
    assert elapsed < 4.5, f"20 x 0.25 s on 2 workers took {elapsed:.1f} s"  # serial: 5 s
    if pool.sandbox_uids:
        uids = await asyncio.gather(*(pool.run("import os, time\ntime.sleep(0.2)\n"
                                               "row['out'] = os.getuid()", {}, "out")
                                      for _ in range(2)))
        assert sorted(uids) == sorted(pool.sandbox_uids), "one uid per worker slot"


async def test_pool_survives_a_killed_worker(pool: SandboxPool) -> None:
    task = asyncio.create_task(pool.run("import time\ntime.sleep(60)", {}, "out", timeout_s=60))
    deadline = time.monotonic() + 5
    while not cell_processes(pool):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    procs = _processes()
    victim = next(procs[pid][0] for pid in cell_processes(pool)
                  if procs[pid][0] in pool.worker_pids)
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(SandboxError) as info:
        await task
    assert info.value.kind == "crashed" and "crashed its sandbox worker" in info.value.message
    deadline = time.monotonic() + 10
    while len(pool.worker_pids) < 2 or victim in pool.worker_pids:
        assert time.monotonic() < deadline, "the worker was not replaced"
        await asyncio.sleep(0.02)
    await wait_until_no_cell_processes(pool)
    results = await asyncio.gather(*(pool.run("row['out'] = 1", {}, "out") for _ in range(4)))
    assert results == [1, 1, 1, 1]


def _memory_holds(pid: int, needle: bytes) -> bool:
    """Whether the readable memory of process ``pid`` contains ``needle``."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if not fields[1].startswith("r") or (len(fields) > 5 and fields[5].startswith("[v")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, ValueError, OverflowError):
                continue
    return False


async def test_worker_keeps_no_cell_data(small_pool: SandboxPool) -> None:
    """Cells are forked from the worker, so whatever cell data the worker kept in memory, a
    later cell (of another table, another user) could read: the worker must keep none."""
    source, result = os.urandom(4096).hex(), os.urandom(4096).hex()
    assert await small_pool.run("row['out'] = row['src'][:0] + row['res']",
                                {"src": source, "res": result}, "out") == result
    (worker,) = small_pool.worker_pids
    try:
        kept_input = _memory_holds(worker, source.encode())
        kept_output = _memory_holds(worker, result.encode())
    except PermissionError:
        pytest.skip("cannot read the worker's memory here")
    assert not kept_input, "the worker kept a cell's input"
    assert not kept_output, "the worker kept a cell's output"


# -- the seed's media examples ---------------------------------------------------------------

GRAYSCALE = """
from PIL import Image
import io
import json

try:
    # 1. Access the input image bytes
    image_bytes = row["Input Image Column"]

    # 2. Open as PIL Image
    with Image.open(io.BytesIO(image_bytes)) as img:
        # 3. Process (example: convert to grayscale)
        img = img.convert("L")

        # 4. Save to bytes buffer
        output_buffer = io.BytesIO()
        img.save(output_buffer, format="PNG")

        # 5. Assign bytes to column
        row["processed_image"] = output_buffer.getvalue()
except Exception as e:
    row["processed_image"] = None
"""

HALF_VOLUME = """
import soundfile as sf
import io
import json

try:
    # 1. Read input audio bytes
    with io.BytesIO(row["Input Audio Column"]) as input_buffer:
        data, samplerate = sf.read(input_buffer)

    # 2. Process (example: reduce volume by half)
    data = data * 0.5

    # 3. Write to buffer
    output_buffer = io.BytesIO()
    sf.write(output_buffer, data, samplerate, format="WAV", subtype="PCM_16")

    # 4. Assign bytes to column
    row["processed_audio"] = output_buffer.getvalue()
except Exception as e:
    row["processed_audio"] = None
"""


async def test_seed_grayscale_image_example(pool: SandboxPool) -> None:
    image_module = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    source = image_module.new("RGB", (4, 3), (200, 30, 90))
    buffer = io.BytesIO()
    source.save(buffer, format="PNG")
    out = await pool.run(GRAYSCALE, {"Input Image Column": buffer.getvalue()}, "processed_image")
    assert isinstance(out, bytes) and out.startswith(b"\x89PNG")
    with image_module.open(io.BytesIO(out)) as result:
        assert result.mode == "L" and result.size == (4, 3)
    # Garbage in: the seed's code catches the error and assigns None.
    assert await pool.run(GRAYSCALE, {"Input Image Column": b"not a png"},
                          "processed_image") is None


async def test_seed_half_volume_audio_example(pool: SandboxPool) -> None:
    pytest.importorskip("soundfile", reason="soundfile is not installed")
    samples = [0, 1000, -1000, 20000, -20000, 32767]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))
    out = await pool.run(HALF_VOLUME, {"Input Audio Column": buffer.getvalue()},
                         "processed_audio")
    with wave.open(io.BytesIO(out), "rb") as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (8000, 2, 1)
        frames = w.readframes(w.getnframes())
    halved = [int.from_bytes(frames[i:i + 2], "little", signed=True)
              for i in range(0, len(frames), 2)]
    assert all(abs(h - s / 2) <= 1 for h, s in zip(halved, samples, strict=True)), halved


# -- arguments and lifecycle -----------------------------------------------------------------

async def test_bad_arguments_are_invalid_argument(pool: SandboxPool) -> None:
    with pytest.raises(InvalidArgument, match="row"):
        await pool.run("row['out'] = 1", [1, 2], "out")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="row"):
        await pool.run("row['out'] = 1", {"when": time}, "out")
    with pytest.raises(InvalidArgument, match="row"):
        await pool.run("row['out'] = 1", {1: "a"}, "out")  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="column"):
        await pool.run("row['out'] = 1", {}, "")
    with pytest.raises(InvalidArgument, match="timeout_s"):
        await pool.run("row['out'] = 1", {}, "out", timeout_s=0)
    with pytest.raises(InvalidArgument, match="code"):
        await pool.run(b"row['out'] = 1", {}, "out")  # type: ignore[arg-type]


async def test_missing_preload_modules_are_reported(small_pool: SandboxPool) -> None:
    assert small_pool.isolation["preload_failed"] == ["no_such_module_for_the_sandbox"]
    assert await small_pool.run("import numpy\nrow['out'] = 1", {}, "out") == 1


async def test_close_stops_running_cells() -> None:
    sandbox = SandboxPool(workers=1, preload=())
    await sandbox.start()
    workers = sandbox.worker_pids
    task = asyncio.create_task(sandbox.run("import time\ntime.sleep(60)", {}, "out"))
    deadline = time.monotonic() + 5
    while not cell_processes(sandbox):
        assert time.monotonic() < deadline, "the cell never started"
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await sandbox.close()
    with pytest.raises(Unavailable):
        await task
    assert time.monotonic() - started < 3
    assert not set(workers) & set(_processes()), "the worker must be gone"
    assert cell_processes(sandbox) == []
    with pytest.raises(Unavailable):
        await sandbox.run("row['out'] = 1", {}, "out")


async def test_run_needs_a_started_pool() -> None:
    sandbox = SandboxPool(workers=1)
    with pytest.raises(Unavailable):
        await sandbox.run("row['out'] = 1", {}, "out")
    await sandbox.close()


# -- a server that is not root ---------------------------------------------------------------

UNPRIVILEGED_SERVER = r"""
import asyncio, json, os, sys
from rowforge.server.sandbox import SandboxError, SandboxLimits, SandboxPool
from rowforge.server.sandbox import fs_policy, identity, mounts

uid, data = int(sys.argv[1]), sys.argv[2]
# Let the unprivileged "server" reach the interpreter if it lives in a private home.
paths = fs_policy.readable_roots(fs_policy.python_read_roots(), [])
groups = {}
for path, blocker in identity.run_as(uid, uid, identity.traversal_blockers, paths).items():
    groups.setdefault(blocker, []).append(path)
if groups:
    mounts.expose(groups)
identity.drop_to(uid, uid)

async def main():
    out = {}
    limits = SandboxLimits(timeout_s=1.5)
    # A server that is not root cannot give its workers a network namespace: "public"
    # must degrade to no network at all, enforced by seccomp alone.
    async with SandboxPool(workers=1, forbidden_paths=[data], limits=limits,
                           network="public") as pool:
        async def attempt(code, row=None):
            try:
                return {"value": await pool.run(code, row or {}, "out")}
            except SandboxError as e:
                return {"kind": e.kind, "message": e.message}
        out["isolation"] = pool.isolation
        out["uid"] = await attempt("import os\nrow['out'] = os.getuid()")
        out["secret"] = await attempt("row['out'] = open(row['p']).read()",
                                      {"p": data + "/secret.txt"})
        out["kill_server"] = await attempt("import os\nos.kill(row['pid'], 9)",
                                           {"pid": os.getpid()})
        out["kill_worker"] = await attempt("import os\nos.kill(os.getppid(), 9)")
        out["environ"] = await attempt("row['out'] = open(f'/proc/{row[\"pid\"]}/environ').read()",
                                       {"pid": os.getpid()})
        out["fork_bomb"] = await attempt(
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
        out["connect"] = await attempt(
            "import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=2)")
        out["listen"] = await attempt(
            "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()")
        out["after"] = await attempt("row['out'] = 1")
    print(json.dumps(out))

asyncio.run(main())
"""


@needs_landlock
async def test_unprivileged_server_relies_on_landlock(dirs: dict[str, Path]) -> None:
    """Cells of a non-root server share its uid: Landlock alone must keep them off its data
    and its processes. Simulated by a root helper that drops to ``nobody`` before starting
    the pool."""
    if os.geteuid() != 0:
        pytest.skip("needs root to simulate a server running as another user")
    nobody = 65534
    data = dirs["base"] / "nobody-data"
    data.mkdir(mode=0o700)
    (data / "secret.txt").write_text(SECRET)
    os.chown(data, nobody, nobody)
    os.chown(data / "secret.txt", nobody, nobody)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", UNPRIVILEGED_SERVER, str(nobody), str(data), cwd="/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    out = json.loads(stdout)
    assert out["isolation"]["privileged"] is False and out["isolation"]["landlock"] > 0
    assert out["uid"] == {"value": nobody}  # the same uid as the server
    assert out["secret"]["kind"] == "forbidden"
    assert out["environ"]["kind"] == "forbidden"
    if out["isolation"]["signals_scoped"]:
        assert out["kill_server"]["kind"] == "forbidden"
        assert out["kill_worker"]["kind"] == "forbidden"
    assert out["fork_bomb"]["kind"] == "timeout"
    assert out["isolation"]["network"] == "off", out["isolation"]
    assert "network namespace" in out["isolation"]["network_note"]
    assert out["isolation"]["network_layers"][0] == "seccomp"
    for attack in ("connect", "listen"):
        assert out[attack]["kind"] == "forbidden", out[attack]
        assert "denied network access" in out[attack]["message"], out[attack]
    assert out["after"] == {"value": 1}


# -- the pool's directory inside the data directory ------------------------------------------

async def test_cells_work_inside_the_private_data_directory(dirs: dict[str, Path]) -> None:
    """The server keeps the pool's directory in ``<data_dir>/sandbox`` (0700 data dir): cells
    still get a private writable directory there, yet see nothing of the data directory."""
    from rowforge.server import leftovers

    data = dirs["base"] / "data-with-sandbox"
    data.mkdir(mode=0o700)
    (data / "secret.txt").write_text(SECRET)
    work = data / "sandbox"
    # What a SIGKILLed server left: a run directory of a process that is gone.
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    stale = work / f"run-{leftovers.HOST}-{gone.pid}-abcdefgh"
    (stale / "slot-0" / "cell-x").mkdir(parents=True)
    (stale / "slot-0" / "cell-x" / "file").write_bytes(b"left over")
    async with SandboxPool(workers=1, forbidden_paths=[str(data)], work_dir=work,
                           preload=()) as pool:
        assert not stale.exists()
        runs = list(work.iterdir())
        assert len(runs) == 1 and runs[0].name.startswith(f"run-{leftovers.owner_tag()}-")
        code = ("import os\n"
                "open('note.txt', 'w').write('hi')\n"
                "row['out'] = [os.getcwd().startswith(row['work']), open('note.txt').read()]\n")
        assert await pool.run(code, {"work": str(work)}, "out") == [True, "hi"]
        error = await run_error(pool, "row['out'] = open(row['p']).read()",
                                {"p": str(data / "secret.txt")})
        assert_denied_or_hidden(error)
        assert await pool.sweep_leftovers() == 0  # a live pool keeps its own directory
    assert list(work.iterdir()) == []
