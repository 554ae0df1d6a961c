import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

torch.set_num_threads(1)
# Nothing downloads inside a test (subprocesses inherit it): a missing dataset stays an error.
# tests/test_auto_download.py turns downloads on with a stand-in downloader or a local server.
os.environ["OODGEN_NO_DOWNLOAD"] = "1"


@pytest.fixture(scope="session")
def mnist_small():
    """A small real MNIST subset (train 600, test 300)."""
    from oodgen.data import load
    tr = load("mnist", "train", n=600)
    te = load("mnist", "test", n=300)
    return tr, te


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files[path]`` following ``server.plans[path]``, one plan step per request
    (the last step repeats): ``ok`` (honours Range), ``norange`` (ignores it), ``drop`` (announces
    the full length, sends half, closes), ``503``, ``404``."""

    timeout = 5

    def log_message(self, *_args):
        pass

    def do_GET(self):
        srv = self.server
        rng = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((self.path, rng))
            plan = srv.plans.get(self.path, ["404"])
            n = srv.counts.get(self.path, 0)
            srv.counts[self.path] = n + 1
        step = plan[min(n, len(plan) - 1)]
        if step in ("404", "503") or self.path not in srv.files:
            self.send_error(int(step) if step in ("404", "503") else 404)
            return
        data = srv.files[self.path]
        start = int(rng[6:].split("-")[0]) if rng and step != "norange" else 0
        if start >= len(data) and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        if start:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:len(body) // 2] if step == "drop" else body)
        self.close_connection = True


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1; it stops at teardown, or by itself after 60 s."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.plans, srv.counts, srv.requests = {}, {}, {}, []
    srv.lock = threading.Lock()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, srv.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield srv
    finally:
        watchdog.cancel()
        srv.shutdown()
        srv.server_close()
        thread.join(5)
