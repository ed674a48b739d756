"""The warm python (clipfit/experiments/warm_python.py): programs forked from a server that
imported torch once behave as in a fresh interpreter: same results, streams, exit statuses,
working folder, environment, lock descriptor and signals; anything else runs the real one.

One server serves the module's tests (it imports torch once, a few seconds); each test checks
in the server's log that its programs did run in the server, not in the fallback.
"""
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clipfit.experiments import warm_python
from clipfit.experiments.runners import share_cpus
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip
from clipfit.training import run_folder
from _helpers import tiny_train_argv

REPO = Path(__file__).resolve().parents[1]
WARM_MARK = "import sys; print('torch' in sys.modules)"  # True only in the server's forks


def _env() -> dict:
    """This process's environment without pytest's per-test variable, with this checkout first."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def warm():
    server = warm_python.WarmPython(sys.executable, _env())
    yield server
    server.stop()


@pytest.fixture
def env():
    return _env()


def ran_in_server(warm, *argv) -> bool:
    """Whether the server's log shows it ran ``python ARGV`` itself."""
    line = "python " + json.dumps(list(argv))
    return any(ln.split(": ", 1)[-1] == line for ln in Path(warm.log).read_text().splitlines()
               if " pid " in ln)


def both(warm, args, **kw):
    """``python ARGS`` in the warm python and in a fresh interpreter."""
    kw = {"capture_output": True, "text": True, "timeout": 120, **kw}
    return (subprocess.run([warm.wrapper, *args], **kw), subprocess.run([sys.executable, *args], **kw))


def normalised_log(path: Path, out: Path) -> list:
    """log.txt without what differs between two runs: times, dates, the output folder."""
    text = path.read_text().replace(str(out), "<OUT>")
    text = re.sub(r"(time|data) [\d.]+ \([\d.]+\)|eta \S+|Elapsed: \S+|\d{4}-\d\d-\d\d[ _-]\d\d[:-]\d\d[:-]\d\d", "<T>", text)
    return text.splitlines()


def test_train_py_gives_the_same_numbers_and_checkpoints_as_a_fresh_interpreter(warm, env, tmp_path):
    root = tmp_path / "data"
    make_dataset("dtd", str(root), n_classes=4, per_class=10)
    assets = {"root": str(root), "clip": save_tiny_clip(str(tmp_path / "tiny.pt"))}
    runs = {}
    for kind, python in (("cold", sys.executable), ("warm", warm.wrapper)):
        out = tmp_path / kind
        shutil.rmtree(root / "dtd" / "split_fewshot", ignore_errors=True)  # each run draws its shots
        argv = ["train.py", *tiny_train_argv(assets, "CLIPFit", "configs/trainers/CLIPFit/vit_b16.yaml", out)]
        proc = subprocess.run([python, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[kind] = (out, argv)
    assert ran_in_server(warm, *runs["warm"][1])
    (cold, _), (hot, _) = runs["cold"], runs["warm"]
    assert json.loads((cold / "metrics.json").read_text()) == json.loads((hot / "metrics.json").read_text())
    assert normalised_log(hot / "log.txt", hot) == normalised_log(cold / "log.txt", cold)
    checkpoints = sorted(p.relative_to(cold) for p in cold.glob("*/model.pth.tar-*"))
    assert checkpoints and checkpoints == sorted(p.relative_to(hot) for p in hot.glob("*/model.pth.tar-*"))
    for name in checkpoints:
        a, b = (torch.load(d / name, map_location="cpu", weights_only=False)["state_dict"] for d in (cold, hot))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("code, status", [("print('out'); import sys; print('err', file=sys.stderr)", 0),
                                          ("import sys; print('bye'); sys.exit(5)", 5),
                                          ("import sys; sys.exit('a message')", 1),
                                          ("def f():\n    raise ValueError('boom')\nf()", 1)])
def test_exit_status_and_streams_are_those_of_a_fresh_interpreter(warm, env, code, status):
    hot, cold = both(warm, ["-c", code], env=env)
    assert ran_in_server(warm, "-c", code)
    assert (hot.returncode, hot.stdout, hot.stderr) == (cold.returncode, cold.stdout, cold.stderr)
    assert hot.returncode == status and (hot.stdout or hot.stderr)


def test_a_user_error_of_train_py_exits_2_with_its_message(warm, env, tmp_path):
    args = ["train.py", "--root", str(tmp_path / "nothing"), "--trainer", "CLIPFit",
            "--dataset-config-file", "configs/datasets/dtd.yaml", "--output-dir", str(tmp_path / "out")]
    hot = subprocess.run([warm.wrapper, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ran_in_server(warm, *args)
    assert hot.returncode == 2
    error = hot.stderr[hot.stderr.index("ERROR: "):]  # the message alone, last, on stderr
    assert str(tmp_path / "nothing") in error and "Traceback" not in error


def test_module_file_stdin_and_c_forms_with_the_clients_folder_and_environment(warm, env, tmp_path):
    script = tmp_path / "prog.py"
    show = ("import os, sys; print(__name__, sys.argv, sys.path[0], os.getcwd(), os.environ.get('DATA'), "
            "'torch' in sys.modules)")
    script.write_text(show + "; print(__file__)")
    env = {**env, "DATA": "only-in-the-client"}
    forms = {"file": ([str(script), "a", "b"], None), "c": (["-c", show, "a"], None),
             "stdin": (["-", "a"], show), "m": (["-m", "clipfit.experiments.results", "status", str(tmp_path)], None)}
    for name, (args, stdin) in forms.items():
        hot, cold = both(warm, args, env=env, cwd=tmp_path, input=stdin)
        assert hot.returncode == cold.returncode == 0, (name, hot.stderr)
        assert ran_in_server(warm, *args), name
        if name == "m":
            assert hot.stdout == cold.stdout and hot.stdout.startswith("not-started") and hot.stderr == cold.stderr
            continue
        assert hot.stdout.replace("True", "False") == cold.stdout, name  # torch preloaded only in the server
        assert f" {tmp_path} only-in-the-client True" in hot.stdout, name
    threads = ["-c", "import torch; print(torch.get_num_threads())"]
    for value in ("1", "2"):  # as torch in a fresh interpreter: OMP_NUM_THREADS threads
        hot = subprocess.run([warm.wrapper, *threads], env={**env, "OMP_NUM_THREADS": value},
                             capture_output=True, text=True, timeout=120)
        assert hot.stdout == f"{value}\n"


def test_what_the_server_cannot_reproduce_runs_in_the_real_interpreter(warm, env, tmp_path):
    cases = {"an interpreter flag": ["-B", "-c", WARM_MARK],
             "a start-up variable": ["-c", WARM_MARK]}
    for why, args in cases.items():
        extra = {"PYTHONHASHSEED": "3"} if why == "a start-up variable" else {}
        hot, cold = both(warm, args, env={**env, **extra})
        assert hot.stdout == cold.stdout == "False\n", why  # ran fresh, and ran
    for args, status in ((["no_such_script.py"], 2), (["-m", "no_such_module"], 1)):  # the real one says so
        hot, cold = both(warm, args, env=env, cwd=tmp_path)
        assert (hot.returncode, hot.stdout, hot.stderr) == (cold.returncode, cold.stdout, cold.stderr)
        assert hot.returncode == status and args[-1] in hot.stderr
    gone = tmp_path / "socket"  # no server behind the socket (a stopped or crashed one)
    socket.socket(socket.AF_UNIX).bind(str(gone))
    for path in (gone, tmp_path / "missing"):
        proc = subprocess.run([sys.executable, "-I", "-S", warm_python.__file__, "client", str(path),
                               sys.executable, "-c", WARM_MARK + "; sys.exit(3)"],
                              env=env, capture_output=True, text=True, timeout=60)
        assert (proc.returncode, proc.stdout) == (3, "False\n")


def test_the_program_holds_the_scripts_lock_descriptor(warm, env, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / run_folder.LOCK_FILE
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # as scripts/_common.sh's launch
    fcntl.flock(fd, fcntl.LOCK_EX)
    code = ("import fcntl, os, sys\nfrom clipfit.training import run_folder\n"
            "fd = int(os.environ['CLIPFIT_LOCK_FD'])\n"
            "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the held lock itself, or it fails\n"
            "held = run_folder.acquire(sys.argv[1], 'x')\n"
            "print(run_folder.is_locked(run_folder.lock_path(sys.argv[1])), held.owned, repr(held.note),"
            " open(run_folder.lock_path(sys.argv[1])).read().split(':')[0])")
    try:
        proc = subprocess.run([warm.wrapper, "-c", code, str(folder)], env={**env, warm_python.LOCK_FD_ENV: str(fd)},
                              pass_fds=(fd,), capture_output=True, text=True, timeout=120)
    finally:
        os.close(fd)
    assert ran_in_server(warm, "-c", code, str(folder))
    assert proc.stdout == f"True False '' pid {os.getpid()}\n", proc.stderr  # holder: the script (here: us)
    assert warm_python.LOCK_FD_ENV == run_folder.LOCK_FD_ENV


def test_sigint_reaches_the_program_and_stop_leaves_nothing_behind(warm, env):
    sleeper = ("import os, time\ntry:\n    print(os.getpid(), flush=True)\n    time.sleep(120)\n"
               "except KeyboardInterrupt:\n    print('interrupted', flush=True)\n    raise")
    proc = subprocess.Popen([warm.wrapper, "-c", sleeper], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    program = int(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT and out == "interrupted\n" and "KeyboardInterrupt" in err
    assert program != proc.pid and not _alive(program)

    proc = subprocess.Popen([warm.wrapper, "-c", sleeper], env=env, stdout=subprocess.PIPE, text=True)
    program = int(proc.stdout.readline())
    server = warm.process.pid
    assert warm.stop() == ""  # it was serving
    assert proc.wait(timeout=30) == -signal.SIGKILL
    deadline = time.time() + 10
    while (_alive(program) or _alive(server)) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(program) and not _alive(server) and not Path(warm.folder).exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended
        return f.read().split(") ")[1][0] != "Z"


def test_parallel_cpu_jobs_share_the_cores(monkeypatch):
    monkeypatch.setattr("clipfit.training.cli.cpu_count", lambda: 8)
    for slots, jobs, given, expected in [([None, None], 5, None, "4"), ([None] * 3, 5, None, "2"),
                                         ([None] * 16, 20, None, "1"), ([None] * 4, 2, None, "4"),
                                         ([None], 5, None, None), ([None, None], 5, "3", "3"),
                                         (["0", "1"], 5, None, None)]:
        env = {} if given is None else {"OMP_NUM_THREADS": given}
        share_cpus(env, slots, jobs)
        assert env.get("OMP_NUM_THREADS") == expected, (slots, jobs, given)
