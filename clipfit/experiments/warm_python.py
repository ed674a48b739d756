"""A warm Python for the sweep's jobs: torch, torchvision, clip and clipfit imported once.

Every step of a job's scripts starts ``"$PYTHON" ...``, and a fresh interpreter spends seconds
importing torch before it does anything. Here a **server** imports those modules once, runs no
torch computation (so no thread pool or CUDA state exists when it forks), and listens on a Unix
socket in a private folder. ``PYTHON`` becomes that folder's ``python``, a wrapper that runs the
**client**: a stdlib-only program that sends its arguments, working folder, environment and
standard streams (with the run folder's lock, ``CLIPFIT_LOCK_FD``) to the server, relays SIGINT,
SIGTERM and SIGHUP, and exits as the program did. For each request the server forks a handler,
which forks the **program**: it takes over the client's folder, environment, streams, signal
dispositions and ``sys.path``, then runs ``python FILE``, ``-m MODULE``, ``-c CODE`` or ``-`` as
CPython would (exit status, tracebacks, atexit, death by SIGINT after an uncaught Ctrl-C).

Whatever cannot be reproduced exactly makes the client ``exec`` the real interpreter with the
same arguments (a **fallback**, as if there were no server): interpreter flags, environment
variables that differ from the server's other than those read at run time (:data:`RUNTIME_ENV`)
or handled here (``PYTHONPATH``, ``PYTHONUNBUFFERED``, ``OMP_NUM_THREADS``), a module the server
imported that the program's ``sys.path`` would find elsewhere, an interactive stdin, an
unreachable or failed server. A server on a machine where torch sees a CUDA device refuses to
start: every job then runs in a fresh interpreter.

``python -m clipfit.experiments.warm_python run -- COMMAND...`` runs a command with a warm
``PYTHON``; the sweep starts one itself (``--warm``, see :mod:`clipfit.experiments.sweep`).
"""
from __future__ import annotations

import io
import json
import os
import os.path as osp
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

LOCK_FD_ENV = "CLIPFIT_LOCK_FD"  # clipfit/training/run_folder.py: LOCK_FD_ENV (the client imports no clipfit)
FOLDER_ENV = "CLIPFIT_WARM_PYTHON"  # set by ``run`` for its command: the server's folder
SOCKET, WRAPPER = "socket", "python"  # in the server's folder
RELAYED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STARTUP_TIMEOUT = 120.0  # seconds a client waits for its program to be ready, then falls back
# Environment variables read at run time (not while the interpreter or a module starts), so the
# program may see other values than the server: the shell's bookkeeping, PATH (the wrapper names
# the interpreter), scripts/_common.sh's environment contract, and clipfit's run-time switches.
RUNTIME_ENV = frozenset({
    "PWD", "OLDPWD", "SHLVL", "_", "PATH",
    "TRAINER", "CFG", "SHOTS", "DATA", "OUT", "PYTHON", "CKPT_FREQ", "LOAD_EPOCH", "OVERWRITE",
    "DRY_RUN", LOCK_FD_ENV, "CLIPFIT_DEBUG", FOLDER_ENV,
})
HANDLED_ENV = frozenset({"PYTHONPATH", "PYTHONUNBUFFERED"})  # sys.path and stdio follow the client


# ---------------------------------------------------------------- messages

def _send(sock: socket.socket, message: dict, fds: Sequence[int] = ()) -> None:
    """One length-prefixed JSON message, with ``fds`` attached (SCM_RIGHTS)."""
    data = json.dumps(message).encode()
    data = struct.pack("!I", len(data)) + data
    sent = socket.send_fds(sock, [data], list(fds)) if fds else 0
    sock.sendall(data[sent:])


def _read(sock: socket.socket, n: int, data: bytes = b"") -> bytes:
    """``data`` completed to ``n`` bytes from ``sock`` (shorter at end of stream)."""
    while len(data) < n:
        more = sock.recv(n - len(data))
        if not more:
            break
        data += more
    return data


def _receive(sock: socket.socket, max_fds: int = 0) -> Tuple[Optional[dict], List[int]]:
    """The next message and the descriptors attached to it; ``(None, [])`` at end of stream."""
    head, fds = socket.recv_fds(sock, 4, max_fds)[:2] if max_fds else (sock.recv(4), [])
    head = _read(sock, 4, head) if head else head
    body = _read(sock, struct.unpack("!I", head)[0]) if len(head) == 4 else b""
    if len(head) < 4 or len(body) < struct.unpack("!I", head)[0]:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(body), fds


# ---------------------------------------------------------------- client

def client(socket_path: str, real: str, args: List[str]) -> None:
    """``real args`` run by the server (or by ``real`` itself when it cannot); exits as it did."""
    fds = [0, 1, 2]
    lock = os.environ.get(LOCK_FD_ENV, "")
    if lock.isdigit() and int(lock) not in fds:
        fds.append(int(lock))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    reply: Optional[dict] = None
    try:
        sock.settimeout(STARTUP_TIMEOUT)
        sock.connect(socket_path)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        ignored = [int(s) for s in signal.valid_signals()
                   if s not in (signal.SIGKILL, signal.SIGSTOP) and signal.getsignal(s) == signal.SIG_IGN]
        _send(sock, {"argv": args, "cwd": os.getcwd(), "env": dict(os.environ), "fds": fds,
                     "ppid": os.getppid(), "ignored": ignored, "blocked": [int(s) for s in mask]},
              fds)
        reply, _ = _receive(sock)
    except (OSError, ValueError):
        pass
    if not reply or "ready" not in reply:
        sock.close()
        os.execv(real, [real, *args])

    def relay(signum, frame):
        _send(sock, {"signal": signum})

    signal.pthread_sigmask(signal.SIG_BLOCK, RELAYED)  # relayed only once the program runs
    for sig in RELAYED:
        if signal.getsignal(sig) != signal.SIG_IGN:
            signal.signal(sig, relay)
    sock.settimeout(None)
    _send(sock, {"go": True})
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    status, _ = _receive(sock)
    if status is None:  # the server went away: the program was killed with it
        status = {"signal": int(signal.SIGKILL)}
    if "signal" in status:
        if status["signal"] not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(status["signal"], signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [status["signal"]])
        os.kill(os.getpid(), status["signal"])
        os._exit(128 + status["signal"])
    os._exit(status["exit"])


# ---------------------------------------------------------------- the program (a fork of the server)

def _exit_code(code: object) -> int:
    """CPython's exit status for ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _stdio(fd: int, write: bool, unbuffered: bool) -> io.TextIOWrapper:
    """A standard stream on ``fd`` made as CPython makes it at start."""
    raw = io.open(fd, "wb" if write else "rb", buffering=0 if unbuffered and write else -1,
                  closefd=False)
    template = (sys.__stdin__, sys.__stdout__, sys.__stderr__)[fd]  # the server's: same locale
    stream = io.TextIOWrapper(raw, encoding=template.encoding, errors=template.errors, newline="\n",
                              line_buffering=not unbuffered and (raw.isatty() or fd == 2),
                              write_through=unbuffered)
    stream.mode = "w" if write else "r"
    return stream


def _take_fds(received: Sequence[int], numbers: Sequence[int]) -> None:
    """Give the received descriptors the client's numbers (0, 1, 2 and the lock's)."""
    import fcntl

    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(numbers) + 1) for fd in received]
    for fd in received:
        os.close(fd)
    for fd, number in zip(moved, numbers):
        os.dup2(fd, number, inheritable=True)
        os.close(fd)


def _signals(ignored: Sequence[int], blocked: Sequence[int]) -> None:
    """The client's dispositions, then CPython's own: SIGINT raises KeyboardInterrupt, SIGPIPE
    and SIGXFSZ are ignored."""
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_IGN if int(sig) in ignored else signal.SIG_DFL)
    if int(signal.SIGINT) not in ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _die_with_parent() -> None:
    """SIGKILL this process when its handler ends (Linux ``PR_SET_PDEATHSIG``)."""
    import ctypes

    handler = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != handler:  # it ended before the call
        os._exit(1)


def _path0(argv: Sequence[str], cwd: str) -> str:
    """``sys.path[0]`` of ``python ARGV``: the script's folder, the working folder for ``-m``,
    '' for ``-c`` and ``-``."""
    if argv[0] == "-m":
        return cwd
    if argv[0] in ("-c", "-"):
        return ""
    return osp.dirname(osp.realpath(argv[0]))


def unsupported(request: dict, stdin: int, server_env: Mapping[str, str]) -> str:
    """Why the client's ``python ARGV`` cannot run in the server ("" when it can); ``stdin``:
    the client's standard input."""
    import zipfile

    argv, env = request["argv"], request["env"]
    if not argv:
        return "no arguments (an interactive interpreter)"
    if argv[0] in ("-m", "-c") and len(argv) < 2:
        return f"{argv[0]} without its argument"
    if argv[0].startswith("-") and argv[0] not in ("-m", "-c", "-"):
        return f"interpreter option {argv[0]}"
    if argv[0] == "-" and os.isatty(stdin):
        return "the program on an interactive stdin"
    script = osp.join(request["cwd"], argv[0])
    if not argv[0].startswith("-") and (not osp.isfile(script) or zipfile.is_zipfile(script)):
        return f"{argv[0]} is not a Python source file"
    threads = env.get("OMP_NUM_THREADS", "")
    for name in sorted(set(env) | set(server_env)):
        if name in RUNTIME_ENV or name in HANDLED_ENV or name.startswith("BASH_FUNC_"):
            continue
        if name == "OMP_NUM_THREADS" and threads.isdigit() and int(threads) > 0:
            continue  # torch.set_num_threads
        if env.get(name) != server_env.get(name):
            return f"environment variable {name} differs from the warm server's"
    return ""


def _shadowed(path: List[str], origins: Mapping[str, Optional[str]]) -> str:
    """A module the server imported that ``path`` finds elsewhere ("" when none is)."""
    from importlib.machinery import PathFinder

    for name, origin in origins.items():
        try:
            spec = PathFinder.find_spec(name, path)
        except (ImportError, OSError, ValueError):
            return name
        found = spec.origin if spec is not None and spec.has_location else None
        if found != origin:
            return name
    return ""


def _not_runnable(argv: Sequence[str], origins: Mapping[str, Optional[str]]) -> str:
    """Why the program cannot run here with this ``sys.path`` ("" when it can): a module the
    server imported would be found elsewhere, or ``-m``'s module is not there (the real
    interpreter says so in its words)."""
    import importlib.util

    clash = _shadowed(sys.path, origins)
    if clash:
        return f"{clash} would be found elsewhere on this program's sys.path"
    try:
        found = argv[0] != "-m" or importlib.util.find_spec(argv[1]) is not None
    except (ImportError, ValueError):
        found = False
    return "" if found else f"no module {argv[1]}"


def _program(request: dict, fds: List[int], control: socket.socket, server: "Server") -> None:
    """The forked program: take over the client's state, wait for go, run, exit. Never returns."""
    code = 1
    try:
        _die_with_parent()
        os.setpgid(0, 0)
        _signals(request["ignored"], request["blocked"])
        _take_fds(fds, request["fds"])
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv, env = request["argv"], request["env"]
        extra = [osp.abspath(p) for p in env.get("PYTHONPATH", "").split(os.pathsep)] \
            if env.get("PYTHONPATH") else []
        sys.path[:] = [_path0(argv, request["cwd"]), *extra, *server.base_path]
        problem = _not_runnable(argv, server.origins)
        if problem:
            control.sendall(f"F{problem}".encode())
            os._exit(0)
        control.sendall(b"R")
        if control.recv(1) != b"G":
            os._exit(0)
        control.close()
        code = _run(request, server)
    finally:
        os._exit(code)


def _run(request: dict, server: "Server") -> int:
    """Run the program as ``python ARGV`` would; its exit status (it may also kill itself)."""
    import atexit
    import builtins
    import runpy
    import threading
    import types
    import warnings

    argv, env = request["argv"], request["env"]
    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    sys.stdin, sys.stdout, sys.stderr = (_stdio(0, False, unbuffered), _stdio(1, True, unbuffered),
                                         _stdio(2, True, unbuffered))
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    parent, me, real_getppid = request["ppid"], os.getpid(), os.getppid
    os.getppid = lambda: parent if os.getpid() == me else real_getppid()  # as after exec
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        server.torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # a fresh interpreter seeds numpy from the OS
    interrupted = False
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            with warnings.catch_warnings():  # the server imported it already, as a module
                warnings.filterwarnings("ignore", "'.*' found in sys.modules after import of package",
                                        RuntimeWarning)
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] in ("-c", "-"):
            sys.argv = ["-c" if argv[0] == "-c" else "-", *argv[2 if argv[0] == "-c" else 1:]]
            source = argv[1] if argv[0] == "-c" else sys.stdin.buffer.read()
            main = types.ModuleType("__main__")
            main.__builtins__ = builtins
            sys.modules["__main__"] = main
            exec(compile(source, "<string>" if argv[0] == "-c" else "<stdin>", "exec",
                         dont_inherit=True), main.__dict__)
        else:
            sys.argv = list(argv)
            runpy.run_path(osp.abspath(argv[0]), run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except BaseException as error:
        interrupted = isinstance(error, KeyboardInterrupt)
        tb = error.__traceback__  # from the program's first frame, as CPython shows it
        while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, runpy.__file__, "<frozen runpy>"):
            tb = tb.tb_next
        sys.excepthook(type(error), error.with_traceback(tb), tb)
        code = 1
    threading._shutdown()  # as CPython at exit: non-daemon threads, atexit, then the streams
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = 120
    if interrupted:  # CPython ends an uncaught KeyboardInterrupt by dying of SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


# ---------------------------------------------------------------- server

class Server:
    """Imports the modules once, then forks a handler per client."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self.env = dict(os.environ)
        entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep)] \
            if os.environ.get("PYTHONPATH") else []
        self.head = sys.path[:1 + len(entries)]  # sys.path[0] and PYTHONPATH's entries
        self.base_path: List[str] = []  # the rest, once the modules are imported
        self.origins: Dict[str, Optional[str]] = {}
        self.handlers: List[int] = []
        self.stopping = False
        self.torch = None

    def preload(self) -> None:
        """Import torch, torchvision, clip and clipfit's command lines and plugins; refuse when
        torch sees a CUDA device (a forked CUDA is broken) or CUDA got initialised."""
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # ask NVML, not the CUDA driver
        import torch

        if torch.cuda.is_available():
            raise SystemExit("warm python: torch sees a CUDA device; the jobs start fresh "
                             "interpreters (a CUDA context does not survive a fork)")
        import torchvision  # noqa: F401  (pulls in torch._dynamo)
        from clipfit.experiments import results, tables  # noqa: F401
        from clipfit.methods import openai_clip  # noqa: F401
        from clipfit.training import cli, run_folder  # noqa: F401

        cli.import_plugins()
        if torch.cuda.is_initialized():
            raise SystemExit("warm python: importing initialised CUDA; the jobs start fresh interpreters")
        os.environ.clear()
        os.environ.update(self.env)
        self.torch = torch
        self.origins = self._top_level_origins()
        self.base_path = list(sys.path)  # with what the imports added (setuptools' _vendor)
        for entry in self.head:
            self.base_path.remove(entry)

    @staticmethod
    def _top_level_origins() -> Dict[str, Optional[str]]:
        """Where sys.path's finder finds each imported top-level module that it found."""
        from importlib.machinery import PathFinder

        origins = {}
        for name, module in list(sys.modules.items()):
            spec = getattr(module, "__spec__", None)
            if "." in name or name == "__main__" or spec is None or not spec.has_location:
                continue
            found = PathFinder.find_spec(name, sys.path)
            if found is not None and found.origin == spec.origin:
                origins[name] = spec.origin
        return origins

    def serve(self, listener: socket.socket) -> None:
        """Accept clients until SIGTERM/SIGINT, then end the programs still running. When the
        process that started it is gone (a killed sweep), accept no more clients (they run the
        real interpreter), let the running programs finish, and end."""
        parent = os.getppid()

        def stop(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        sys.stdout.flush()
        sys.stderr.flush()
        while not self.stopping and (listener.fileno() >= 0 or self.handlers):
            if os.getppid() != parent and listener.fileno() >= 0:
                listener.close()
                os.unlink(self.socket_path)
            ready = select.select([listener] if listener.fileno() >= 0 else [], [], [], 1.0)[0]
            self._reap(0)
            if ready and not self.stopping:
                conn, _ = listener.accept()
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    self._handle(conn)
                self.handlers.append(pid)
                conn.close()
        for pid in self.handlers:
            _kill(pid, signal.SIGTERM)
        self._reap(None)

    def _reap(self, timeout: Optional[float]) -> None:
        """Collect finished handlers (all of them when ``timeout`` is None)."""
        for pid in list(self.handlers):
            done, _ = os.waitpid(pid, 0 if timeout is None else os.WNOHANG)
            if done:
                self.handlers.remove(pid)

    def _handle(self, conn: socket.socket) -> None:
        """A handler: check the request, fork the program, relay signals, report its status."""
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self._serve_one(conn)
        except BaseException:  # the client falls back or sees the program killed; never hang it
            code = 1
        finally:
            os._exit(code)

    def _serve_one(self, conn: socket.socket) -> None:
        request, fds = _receive(conn, max_fds=8)
        reason = "bad request" if request is None or len(fds) != len(request.get("fds", ())) \
            else unsupported(request, fds[0], self.env)
        if reason:
            _fallback(conn, reason, request)
            return
        control, child_control = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            conn.close()
            control.close()
            _program(request, fds, child_control, self)
        child_control.close()
        for fd in fds:
            os.close(fd)
        _setpgid(pid)
        answer = control.recv(4096)
        if answer != b"R":
            os.waitpid(pid, 0)
            _fallback(conn, answer[1:].decode(errors="replace") or "the program failed to start",
                      request)
            return
        _log(f"pid {pid}: python {json.dumps(request['argv'])}")
        _send(conn, {"ready": pid})
        go, _ = _receive(conn)
        if not go:  # the client gave up: nothing has run
            _kill_group(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        signal.signal(signal.SIGTERM, lambda signum, frame: _kill_group(pid, signal.SIGKILL))
        pidfd = os.pidfd_open(pid)
        control.send(b"G")
        control.close()
        while True:
            ready = select.select([conn, pidfd], [], [])[0]
            if pidfd in ready:
                break
            message, _ = _receive(conn)
            if message is None:  # the client died: so does its program
                _kill_group(pid, signal.SIGKILL)
                break
            _kill_group(pid, message["signal"])
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            _send(conn, {"signal": os.WTERMSIG(status)})
        else:
            _send(conn, {"exit": os.WEXITSTATUS(status)})


def _log(line: str) -> None:
    """One line of the server's log (its stdout), written at once."""
    os.write(1, f"{time.strftime('%H:%M:%S')} {line}\n".encode(errors="replace"))


def _fallback(conn: socket.socket, reason: str, request: Optional[dict]) -> None:
    """Tell the client to run the real interpreter, and why (also to the log)."""
    _log(f"fallback ({reason}): python {json.dumps(request['argv']) if request else '?'}")
    _send(conn, {"fallback": reason})


def _setpgid(pid: int) -> None:
    try:
        os.setpgid(pid, pid)
    except OSError:  # it did so itself already, or has exited
        pass


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def serve(socket_path: str) -> None:
    """``serve SOCKET``: listen first (clients queue while the modules load), then serve."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path)
    listener.listen(128)
    server = Server(socket_path)
    server.preload()
    server.serve(listener)


# ---------------------------------------------------------------- starting and stopping one

class WarmPython:
    """A server and its wrapper in a private folder; ``wrapper`` is the ``PYTHON`` for jobs.

    ``python`` is the interpreter the jobs would run (the server runs as it, and the client
    falls back to it); ``env`` is the jobs' environment.
    """

    def __init__(self, python: str, env: Mapping[str, str], log: str = ""):
        from clipfit import REPO_ROOT

        self.folder = tempfile.mkdtemp(prefix="clipfit-warm-")
        self.socket_path = osp.join(self.folder, SOCKET)
        self.wrapper = osp.join(self.folder, WRAPPER)
        self.log = log or osp.join(self.folder, "server.log")
        client_cmd = [sys.executable, "-I", "-S", osp.abspath(__file__), "client",
                      self.socket_path, python]
        with open(self.wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec {shlex.join(client_cmd)} \"$@\"\n")
        os.chmod(self.wrapper, 0o755)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [python, "-m", "clipfit.experiments.warm_python", "serve", self.socket_path],
                cwd=REPO_ROOT, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while not osp.exists(self.socket_path) and self.process.poll() is None \
                and time.time() < deadline:
            time.sleep(0.01)

    def __enter__(self) -> "WarmPython":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> str:
        """Stop the server (and any program still running in it) and remove the folder; a note
        when the server did not serve until now (the jobs then ran in fresh interpreters)."""
        if not osp.isdir(self.folder):  # stopped already
            return ""
        alive = self.process.poll() is None
        if alive:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        note = ""
        if not alive:
            with open(self.log, errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            note = (f"warm python: the server ended early (exit {self.process.returncode}"
                    f"{': ' + lines[-1] if lines else ''}); python commands ran in fresh interpreters")
        shutil.rmtree(self.folder, ignore_errors=True)
        return note


def jobs_python(env: Mapping[str, str], cwd: str) -> Optional[str]:
    """The interpreter ``"$PYTHON"`` names for scripts run in ``cwd`` (as scripts/_common.sh
    resolves it), None when there is none."""
    python = env.get("PYTHON") or "python"
    if os.sep in python:
        path = python if osp.isabs(python) else osp.join(cwd, python)
        return path if os.access(path, os.X_OK) and osp.isfile(path) else None
    return shutil.which(python, path=env.get("PATH", os.defpath))


def run(command: Sequence[str]) -> int:
    """``run -- COMMAND...``: COMMAND with ``PYTHON`` a warm python; its exit status."""
    env = dict(os.environ)
    python = jobs_python(env, os.getcwd())
    if python is None:
        print(f"warm python: no interpreter {env.get('PYTHON') or 'python'}", file=sys.stderr)
        return 2
    warm = WarmPython(python, env)
    try:
        env.update({"PYTHON": warm.wrapper, FOLDER_ENV: warm.folder})
        proc = subprocess.Popen(list(command), env=env)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # the command saw Ctrl-C too: wait for it to end
                continue
    finally:
        note = warm.stop()
        if note:
            print(note, file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"] and len(argv) >= 3:
        client(argv[1], argv[2], argv[3:])
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(argv[1])
        return 0
    if argv[:1] == ["run"]:
        command = argv[2:] if argv[1:2] == ["--"] else argv[1:]
        if command:
            return run(command)
    print("usage: python -m clipfit.experiments.warm_python run -- COMMAND [ARGS...]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
