"""Run many ``modprune`` command lines quickly, each in its own process, as the console script would.

Importing torch takes seconds, so the CLI tests would spend most of their time starting Python. This
server imports the CLI once and warms it up with a read-only run (``modprune recipes``: imports, the
CLI's own set-up, installed plugins), then forks a fresh child for every request. The child does what the ``modprune`` console script does
(``sys.exit(main())``) with its own working directory, stdout and stderr files, so exit codes, output
streams, tracebacks and files written are those of a real run. The server itself never runs tensor
operations, so forking is safe.

Protocol: one JSON request per stdin line ``{"argv": [...], "cwd": str, "stdout": path, "stderr": path}``;
one JSON reply per stdout line ``{"rc": int}``. EOF on stdin stops the server.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _child(request: dict) -> int:
    os.chdir(request["cwd"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = ["modprune", *request["argv"]]
    from modprune.cli import main

    try:
        code = main(request["argv"])
    except SystemExit as exc:  # argparse errors and --help
        code = exc.code
    except BaseException:  # an uncaught exception (e.g. with --debug): as the interpreter would report it
        traceback.print_exc()
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    return code


def serve() -> None:
    import contextlib
    import io
    import logging

    from modprune.cli import main

    # Warm up with a real, read-only run: it imports every command module, does the CLI's own set-up
    # (in the order a real run does it) and loads the installed plugins; children inherit all that.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["--quiet", "recipes"])
    for handler in list(logging.root.handlers):  # each child configures logging for its own flags
        logging.root.removeHandler(handler)
    logging.root.setLevel(logging.WARNING)
    replies = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve()
