"""Shared by the benchmark scripts in e2e/bench: where results go and how each section of
BENCHMARKS.md says what produced it. Not a test library: benchmarks report, they do not judge."""
import datetime, http.client, json, os, re, socket, ssl, subprocess, threading
from urllib.parse import quote, urlparse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "out", "bench")


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout.strip()


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def cpu_seconds(pid):
    """User and system CPU time of a process so far, in seconds (/proc/PID/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_seconds(pid):
    """CPU time of a process's live threads so far, in seconds, to the nanosecond (the sum of
    /proc/PID/task/*/schedstat). For short windows, where cpu_seconds's 10 ms steps are too
    coarse; threads that have exited are not counted."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{task}/schedstat").read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread exited meanwhile
    return total / 1e9


def status_kib(pid, field):
    """A /proc/PID/status size field (VmRSS, VmHWM) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


class HttpStatus(RuntimeError):
    """The apiserver answered with a status the caller did not take."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Api:
    """A minimal HTTPS client for the apiserver, from a kubeconfig with a client certificate (the
    local cluster's admin) or a token (the identities the scale bench writes), one connection
    per thread."""

    def __init__(self, kubeconfig):
        text = open(kubeconfig).read()
        field = lambda name: (re.search(rf"^\s*{name}:\s*(\S+)", text, re.M) or [None, None])[1]
        url = urlparse(field("server"))
        self.host, self.port, self.server = url.hostname, url.port, field("server")
        self.ca = field("certificate-authority")
        self.ctx = ssl.create_default_context(cafile=self.ca)
        self.token = field("token")
        if not self.token:
            self.ctx.load_cert_chain(field("client-certificate"), field("client-key"))
        self.local = threading.local()

    def conn(self):
        if getattr(self.local, "conn", None) is None:
            self.local.conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=120)
        return self.local.conn

    def auth(self):
        """The headers that identify a token's holder; a certificate does it in the handshake."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method, path, body=None, content_type="application/json", ok=(200, 201), accept="application/json"):
        headers = {"Accept": accept, **self.auth()}
        if body is not None:
            headers["Content-Type"] = content_type
            body = json.dumps(body, separators=(",", ":"))
        for attempt in range(3):
            try:
                c = self.conn()
                c.request(method, path, body=body, headers=headers)
                r = c.getresponse()
                data = r.read()
                break
            except (OSError, http.client.HTTPException):
                self.local.conn = None
                if attempt == 2:
                    raise
        if ok and r.status not in ok:
            raise HttpStatus(r.status, f"{method} {path}: {r.status} {data[:300]!r}")
        return r.status, data

    def json(self, method, path, body=None, **kw):
        return json.loads(self.request(method, path, body, **kw)[1])

    def pages(self, path, limit=500, **kw):
        """Yields each page of a list, following `continue` to the last, as a reflector lists."""
        token, sep = "", "&" if "?" in path else "?"
        while True:
            page = self.json("GET", f"{path}{sep}limit={limit}&continue={quote(token)}", **kw)
            yield page
            token = page["metadata"].get("continue")
            if not token:
                return

    def stream(self, path):
        """Yields the JSON lines of a watch."""
        c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=300)
        c.request("GET", path, headers=self.auth())
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError(f"watch {path}: {r.status}")
        while True:
            line = r.readline()
            if not line:
                return
            yield json.loads(line)


def peer_path(name):
    """The binary e2e/bench/build-peers built for NAME."""
    return sh(os.path.join(ROOT, "e2e/bench/build-peers"), "path", name)


def commit():
    dirty = sh("git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no")
    return sh("git", "-C", ROOT, "rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if dirty else "")


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
    mem_kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
    return f"{os.cpu_count()} cores ({cpu}), {mem_kib / 1048576:.0f} GiB, Linux {os.uname().release}"


def write_section(name, title, command, body):
    """Writes out/bench/NAME.md: one section of BENCHMARKS.md, stamped with the run that made it."""
    os.makedirs(OUT, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"## {title}\n\nMeasured {stamp} at commit {commit()} on {machine()}, with `{command}`.\n\n"
            f"{body.strip()}\n")
    with open(os.path.join(OUT, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)


def ratio(value, peer):
    return f"{value / peer:.2f}" if peer else "n/a"


def fmt_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


ORDER = ["model", "target", "writes", "scale"]
HEADER = """# podlife benchmarks

Written by `e2e/bench/run`. Each section names when, at which commit, on which machine and with
which command it was measured; ratios compare with a peer measured in the same run. Benchmarks
report; tests judge. Re-run one section with `e2e/bench/run SECTION`: the others keep their text.
"""


def assemble(path, fresh):
    """Rewrites BENCHMARKS.md: the sections in `fresh` (name -> text) replace their earlier
    text; the others stay as they were."""
    sections = {}
    if os.path.exists(path):
        current = None
        for line in open(path).read().splitlines(keepends=True):
            marker = re.match(r"<!-- section: (\w+) -->", line)
            if marker:
                current = marker.group(1); sections[current] = ""
            elif current:
                sections[current] += line
    sections.update(fresh)
    with open(path, "w") as f:
        f.write(HEADER)
        for name in ORDER + sorted(set(sections) - set(ORDER)):
            if name in sections:
                f.write(f"\n<!-- section: {name} -->\n{sections[name].strip()}\n")


if __name__ == "__main__":
    # benchlib.py assemble BENCHMARKS.md NAME...: the named sections from out/bench/NAME.md.
    import sys
    if len(sys.argv) < 3 or sys.argv[1] != "assemble":
        sys.exit("usage: benchlib.py assemble BENCHMARKS.md [SECTION...]")
    assemble(sys.argv[2], {n: open(os.path.join(OUT, f"{n}.md")).read() for n in sys.argv[3:]})
