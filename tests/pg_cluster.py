"""A throwaway PostgreSQL cluster for the store tests, from Debian's binaries (`make test` installs the
`postgresql` package where apt is available): initdb into a temp dir, listening only on a unix socket
in that dir, fsync off; stopped and deleted at the end of the session.

>>> with Cluster.start() as url:     # postgresql+psycopg://postgres@/postgres?host=/tmp/mnistlab-pg-…
...     Store(url, tmp / "artifacts")
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin/pg_ctl"


def find_binaries() -> Path | None:
    """The newest Debian PostgreSQL's bin directory, or None where the package is not installed."""
    found = sorted(Path("/").glob(DEBIAN_BINARIES.lstrip("/")),
                   key=lambda p: int(re.sub(r"\D", "", p.parts[-3]) or 0))
    return found[-1].parent if found else None


class Cluster:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="mnistlab-pg-"))  # short: socket paths are limited to 107 bytes
        self.data = self.dir / "data"
        self.user = None
        if os.geteuid() == 0:  # postgres refuses to run as root; Debian's package creates this user
            self.user = pwd.getpwnam("postgres")
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)

    @classmethod
    def start(cls, bindir: Path | None = None) -> "Cluster":
        cluster = cls(bindir or find_binaries())
        try:
            cluster._run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
            cluster._run("pg_ctl", "-D", str(cluster.data), "-l", str(cluster.dir / "server.log"), "-w", "-t", "60",
                         "-o", f"-k {cluster.dir} -c listen_addresses='' -F", "start")
        except Exception:
            cluster.stop()
            raise
        return cluster

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@/postgres?host={self.dir}"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.user is not None:
            command = (["runuser", "-u", "postgres", "--", *command] if shutil.which("runuser")
                       else ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(command)])
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.dir, timeout=120)
        if done.returncode != 0:
            log = (self.dir / "server.log").read_text(errors="replace")[-2000:] if (self.dir / "server.log").exists() else ""
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}\n{log}")

