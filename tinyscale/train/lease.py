"""Leases on gs://: who trains a run, until when, taken and renewed atomically.

An object store has no locks, so a run on gs:// is held by a lease: a small JSON object
`<run>/lock` = {host, pid, owner, expires}. Every change to it is conditional on the
object's generation (GCS's `ifGenerationMatch`): creating it only if absent (generation
0), taking over an expired one only if nobody changed it since it was read, renewing
only while it is still ours. Of several hosts that race for a run, exactly one wins;
the others' writes are refused by the store, not by a read-back.

The holder renews every `ttl / 4` seconds from a thread of the training process
(`Renewer`); a lease whose `expires` has passed is free, and so is one held by a dead
process of this host. Local and shared filesystems use an flock instead (rundir.py).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
import uuid

from tinyscale.errors import TinyscaleError


def host_id() -> str:
    """This host's name in leases and run states (TINYSCALE_HOST overrides it: the tests'
    stand-ins for several hosts on one machine)."""
    return os.environ.get("TINYSCALE_HOST") or socket.gethostname()


@functools.cache
def _client():
    """One storage client per process (making one costs a credentials look-up)."""
    try:
        from google.api_core import exceptions  # optional: the gcs extra
        from google.cloud import storage  # optional: the gcs extra
    except ImportError:
        raise TinyscaleError("leases on gs:// need google-cloud-storage: install it with "
                             "pip install 'tinyscale[gcs]'.") from None
    if os.environ.get("STORAGE_EMULATOR_HOST"):  # a local emulator takes no credentials
        from google.auth.credentials import AnonymousCredentials  # optional: the gcs extra
        return storage.Client(credentials=AnonymousCredentials(), project="emulator"), \
            exceptions
    return storage.Client(), exceptions


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def live(record: dict | None, now: float | None = None) -> bool:
    """Whether a lease record still holds: not expired, and not a dead process here."""
    if not record or record.get("expires", 0) <= (now or time.time()):
        return False
    return record.get("host") != host_id() or _alive(record.get("pid", -1))


class GcsLease:
    """The lease object of one run on gs://."""

    def __init__(self, url: str, ttl: float, clock=time.time):
        bucket, _, key = url[len("gs://"):].partition("/")
        self.clock = clock  # seconds since the epoch (tests set the time)
        client, self._errors = _client()
        self._blob_of = lambda: client.bucket(bucket).blob(key)
        self._get = lambda: client.bucket(bucket).get_blob(key)
        self.ttl, self.generation = ttl, None
        self.owner = f"{host_id()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def _record(self, expires: float) -> str:
        return json.dumps({"host": host_id(), "pid": os.getpid(), "owner": self.owner,
                           "time": self.clock(), "expires": expires})

    def read(self) -> tuple[dict | None, int]:
        """(the lease's record or None, its generation; 0 when absent)."""
        for attempt in range(20):
            blob = self._get()
            if blob is None:
                return None, 0
            try:  # the download is pinned to the generation just looked up
                data = blob.download_as_bytes()
            except self._errors.NotFound:  # renewed in between: that generation is gone
                time.sleep(0.01 * attempt)
                continue
            try:
                return json.loads(data), blob.generation
            except ValueError:
                return None, blob.generation  # a foreign object: free to replace
        raise TinyscaleError(f"the lease {self._blob_of().name} changed 20 times while "
                             "being read: is something rewriting it in a loop?")

    def _write(self, expires: float, generation: int) -> bool:
        blob = self._blob_of()
        try:
            # No client-side retries, and a short timeout: a renewal that cannot get
            # through is tried again by the next period, long before the lease expires.
            blob.upload_from_string(self._record(expires), content_type="application/json",
                                    if_generation_match=generation, retry=None,
                                    timeout=max(2.0, self.ttl / 4))
        except (self._errors.PreconditionFailed, self._errors.NotFound):
            return False
        self.generation = blob.generation
        return True

    def acquire(self) -> bool:
        """Take the lease if it is absent, expired, or ours; False if another holds it."""
        record, generation = self.read()
        if record and record.get("owner") == self.owner and generation == self.generation:
            return self.renew()
        if live(record, self.clock()):
            return False
        return self._write(self.clock() + self.ttl, generation)

    def renew(self) -> bool:
        """Extend our lease; False if it is no longer ours (expired and taken over)."""
        return self.generation is not None and self._write(self.clock() + self.ttl,
                                                           self.generation)

    def release(self) -> None:
        """Give the lease up at once (expired now), if it is still ours."""
        if self.generation is not None:
            self._write(0.0, self.generation)
            self.generation = None


class Renewer:
    """Renews a lease from a daemon thread every ttl / 4 s, off the training loop's path;
    `lost` turns true when a renewal is refused (another host took the run over)."""

    def __init__(self, lease: GcsLease):
        self.lease, self.lost = lease, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-renewer")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lease.ttl / 4):
            try:
                if not self.lease.renew():
                    self.lost = True
                    return
            except Exception:  # a network blip: the next try comes before the lease expires
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
