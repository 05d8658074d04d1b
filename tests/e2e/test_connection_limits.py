"""The accept loop out of descriptors, in a child process of its own with real sockets:
it tries once a second and logs once. The other pieces that keep hostile clients from
costing the scrapes, in-process, are in tests/unit/test_connection_limits.py."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

from tests.support import ROOT

SERVER_OUT_OF_DESCRIPTORS = """
    import asyncio, json, logging, os, resource, socket, sys
    from exporter.app.descriptors import (ListeningSocket, raise_open_file_limit,
                                          summarise_accept_failures)

    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 2048))
    raised = raise_open_file_limit()
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    summarise_accept_failures()
    attempts = 0

    class Counted(ListeningSocket):
        def accept(self):
            global attempts
            attempts += 1
            return super().accept()

    class Made(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(transport)

    listening = Counted.adopt(socket.create_server(("127.0.0.1", 0)))
    made = []

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Made, sock=listening, backlog=2048)
        fillers = []
        while True:  # every descriptor taken
            try:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        print(listening.getsockname()[1], flush=True)
        sys.stdin.readline()  # the clients are waiting in the backlog
        await asyncio.sleep(2)
        failing = attempts
        for fd in fillers:
            os.close(fd)
        await asyncio.sleep(1.5)  # asyncio tries again within a second
        messages = [r.getMessage() for r in records]
        print(json.dumps({"raised": raised, "attempts": failing, "records": messages,
                          "accepted": len(made)}), flush=True)
        server.close()

    asyncio.run(main())
"""


def test_out_of_descriptors_the_accept_loop_tries_once_a_second_and_logs_once() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVER_OUT_OF_DESCRIPTORS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert child.stdout is not None and child.stdin is not None
    port = int(child.stdout.readline())
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
    child.stdin.write("go\n")
    child.stdin.flush()
    result = json.loads(child.stdout.readline())
    child.wait(timeout=10)
    for client in clients:
        client.close()
    assert result["raised"] == 2048
    # asyncio 3.11 alone: up to 2,048 attempts a turn, each logged with its traceback
    assert 1 <= result["attempts"] <= 10, result
    failures = [m for m in result["records"] if "cannot accept connections" in m]
    assert len(failures) == 1 and "Too many open files" in failures[0]
    assert not any("out of system resource" in m for m in result["records"])
    assert result["accepted"] == 50  # once descriptors are free again, the backlog is served
