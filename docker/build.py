"""Build the CPU images where no registry is reachable: `make images-local`, the tests, the benchmark.

    python3 docker/build.py engine              make sure an engine answers; print its DOCKER_HOST
    python3 docker/build.py images [TARGET...]  build (default: every CPU image); print target -> tag as JSON
    python3 docker/build.py tags   [TARGET...]  the tags a build of this tree gets, without building

What a normal Docker host (`make images`, buildx bake) does not need, and this one does:
- engine: $DOCKER_HOST, or /var/run/docker.sock, when an engine answers there; otherwise Debian's
  dockerd (apt-get installs docker.io when we are root and it is missing) is started with its
  own data root and socket, no bridge and no iptables rules: containers use host or no network.
- base: python:3.11-slim cannot be pulled, so a stand-in is made from Debian bookworm with
  debootstrap (python3, venv, this host's CA bundle, which pip needs to reach PyPI here) and
  `docker import`ed. Built once; its tag is a hash of what goes into it.
- torch: the PyTorch CPU index may be unreachable; the CPU wheel from pip's find-links
  directories goes into a small image that the build bind-mounts (TORCH_WHEELS_IMAGE), so the
  multi-GB CUDA build is never downloaded and the wheel never lands in a layer.
- tags: `recap-<target>:local-<hash>` of the build context (after the ignore file), the
  Dockerfile and the build arguments. The same tree gets the same tag (a second build is a
  cache hit) and two checkouts sharing one engine never overwrite each other's images.
Every failure is one line naming what failed (the engine, the base, an image) and exits 1.
Standard library only: it runs before the venv exists.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
IGNORE_FILE = REPO / "docker" / "Dockerfile.dockerignore"
CPU_TARGETS = ("validate", "convert", "launch", "evaluate", "train-cpu")

# Our own engine, used only when none answers elsewhere. Shared by every checkout on the host.
ENGINE_SOCKET = "/run/recap-docker/docker.sock"
ENGINE_DATA_ROOT = "/var/lib/recap-docker"
ENGINE_EXEC_ROOT = "/run/recap-docker/exec"
ENGINE_LOG = "/var/log/recap-dockerd.log"
ENGINE_START_S = 90.0

BASE_REPO = "recap-local-python"
BASE_PACKAGES = ("python3", "python3-venv", "passwd", "ca-certificates")
BASE_SUITE = "bookworm"
BASE_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
WHEELS_REPO = "recap-torch-wheels"
TORCH_WHEEL = re.compile(r"torch-2\.13\.0\+cpu-cp311-cp311-manylinux[^/]*x86_64\.whl$")
LOG_DIR = Path(tempfile.gettempdir()) / "recap-docker-build"


class BuildError(Exception):
    """One line: what failed and why (the CLI prints it and exits 1)."""


# ----------------------------------------------------------------------------- docker CLI


def docker(*args: str, check: bool = True, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    client = shutil.which("docker") or "/usr/bin/docker"
    try:
        result = subprocess.run([client, *args], capture_output=True, text=True, timeout=timeout, **kwargs)
    except FileNotFoundError as exc:
        raise BuildError("docker: no docker client installed (apt-get install docker.io)") from exc
    if check and result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(f"docker {args[0]}: {last}")
    return result


def _answers(host: str | None) -> bool:
    env = dict(os.environ)
    if host:
        env["DOCKER_HOST"] = host
    try:
        return docker("version", "--format", "{{.Server.Version}}", check=False, timeout=20, env=env).returncode == 0
    except (BuildError, subprocess.TimeoutExpired):
        return False


def ensure_engine() -> str:
    """The DOCKER_HOST of an engine that answers, starting our own dockerd if none does."""
    if os.environ.get("DOCKER_HOST"):
        host = os.environ["DOCKER_HOST"]
        if _answers(host):
            return host
        raise BuildError(f"engine: DOCKER_HOST={host} does not answer")
    ours = f"unix://{ENGINE_SOCKET}"
    for host in ("unix:///var/run/docker.sock", ours):
        if host.startswith("unix://") and not os.path.exists(host[7:]):
            continue
        if _answers(host):
            return host
    if os.geteuid() != 0:
        raise BuildError("engine: no Docker engine answers and starting one needs root")
    if not shutil.which("dockerd"):
        _apt_install("docker.io")
    Path(ENGINE_SOCKET).parent.mkdir(parents=True, exist_ok=True)
    with open(ENGINE_LOG, "ab") as log:
        subprocess.Popen(
            ["dockerd", "--data-root", ENGINE_DATA_ROOT, "--exec-root", ENGINE_EXEC_ROOT, "-H", ours,
             "--pidfile", str(Path(ENGINE_SOCKET).parent / "dockerd.pid"),
             "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    deadline = time.monotonic() + ENGINE_START_S
    while time.monotonic() < deadline:
        if os.path.exists(ENGINE_SOCKET) and _answers(ours):
            return ours
        time.sleep(0.5)
    raise BuildError(f"engine: dockerd did not answer on {ours} within {ENGINE_START_S:.0f}s (log: {ENGINE_LOG})")


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BuildError(f"engine: {', '.join(packages)} missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            raise BuildError(f"apt-get: installing {', '.join(packages)} failed: {result.stderr.strip()[-300:]}")


def _image_id(ref: str) -> str | None:
    result = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def build_command() -> tuple[list[str], dict[str, str]]:
    """A BuildKit build: `docker buildx build --load` where buildx exists, else a pre-23 client
    (Debian's 20.10, which builds with BuildKit itself when DOCKER_BUILDKIT=1)."""
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    candidates = [c for c in (shutil.which("docker"), "/usr/bin/docker") if c and os.path.exists(c)]
    for client in candidates:
        if subprocess.run([client, "buildx", "version"], capture_output=True).returncode == 0:
            return [client, "buildx", "build", "--load"], env
    for client in candidates:
        version = subprocess.run([client, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
        if version.stdout[:2].isdigit() and int(version.stdout.split(".")[0]) < 23:
            return [client, "build"], env
    raise BuildError("build: no BuildKit client: install the buildx plugin or Debian's docker.io (20.10)")


# ----------------------------------------------------------------------------- the build context


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's ignore patterns: Go filepath.Match per segment, plus `**` for any depth."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out += "(?:.*/)?"
            else:
                out += ".*"
            continue
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1:end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def ignore_patterns(path: Path) -> list[tuple[bool, str]]:
    """(is_exception, cleaned pattern) per line, in file order."""
    out = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        out.append((line.startswith("!"), os.path.normpath(line.lstrip("!").strip()).lstrip("/")))
    return out


def read_ignore(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    return [(exception, _pattern_regex(pattern)) for exception, pattern in ignore_patterns(path)]


def ignored(rel_path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """The last pattern matching the path or one of its parent directories decides."""
    parts = rel_path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for exception, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            result = not exception
    return result


def build_context(ignore_file: Path = IGNORE_FILE, root: Path = REPO) -> set[str]:
    """Relative paths of the files BuildKit sends as the context."""
    rules = read_ignore(ignore_file)
    exceptions = [pattern for exception, pattern in ignore_patterns(ignore_file) if exception]

    def prunable(rel_dir: str) -> bool:
        """An ignored directory no exception pattern reaches into (like .venv) is not walked."""
        if not ignored(rel_dir, rules):
            return False
        return not any(p.startswith(f"{rel_dir}/") or p[:1] in "*?[" for p in exceptions)

    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else f"{rel_dir}/"
        dirnames[:] = [d for d in dirnames if not prunable(prefix + d)]
        for name in filenames:
            rel = prefix + name
            if not ignored(rel, rules):
                out.add(rel)
    return out


def context_hash(build_args: dict[str, str], root: Path = REPO) -> str:
    """What decides the images' content: context files (path, mode, bytes), Dockerfile, args."""
    digest = hashlib.sha256()
    for rel in sorted(build_context(root / "docker" / IGNORE_FILE.name, root)):
        path = root / rel
        digest.update(f"{rel}\0{path.stat().st_mode & 0o111}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update((root / "docker" / DOCKERFILE.name).read_bytes())
    digest.update(json.dumps(build_args, sort_keys=True).encode())
    return digest.hexdigest()[:12]


# ----------------------------------------------------------------------------- local base


def _base_tag() -> str:
    digest = hashlib.sha256(f"{BASE_SUITE} {' '.join(BASE_PACKAGES)}".encode())
    if HOST_CA_BUNDLE.exists():
        digest.update(HOST_CA_BUNDLE.read_bytes())
    return f"{BASE_REPO}:{BASE_SUITE}-{digest.hexdigest()[:12]}"


def local_base() -> str:
    """The python:3.11-slim stand-in (Debian's Python 3.11), built with debootstrap once."""
    tag = _base_tag()
    if _image_id(tag):
        return tag
    if os.geteuid() != 0:
        raise BuildError(f"base {tag}: debootstrap needs root")
    if not shutil.which("debootstrap"):
        _apt_install("debootstrap")
    work = Path(tempfile.mkdtemp(prefix="recap-base-", dir="/var/tmp"))
    rootfs = work / "rootfs"
    try:
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE, str(rootfs),
             BASE_MIRROR], capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            raise BuildError(f"base {tag}: debootstrap failed: {(result.stdout + result.stderr).strip()[-300:]}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                     "usr/share/locale", "usr/share/info"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        if HOST_CA_BUNDLE.exists():  # the CA this host's TLS to PyPI goes through
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        with subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE) as tar:
            docker("import",
                   "-c", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "-c", "ENV LANG=C.UTF-8",
                   "-c", "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
                   "-c", 'CMD ["python3"]', "-", tag, stdin=tar.stdout)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tag


# ----------------------------------------------------------------------------- torch wheel


def _find_links() -> list[Path]:
    """pip's find-links directories ($PIP_FIND_LINKS and pip's config files)."""
    dirs = os.environ.get("PIP_FIND_LINKS", "").split()
    result = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            dirs += value.strip("'\"").split()
    return [Path(d.removeprefix("file://")) for d in dirs if Path(d.removeprefix("file://")).is_dir()]


def torch_wheels_image() -> str | None:
    """An image holding a pip index with the local CPU torch wheel, or None (use the PyTorch index)."""
    wheels = [p for d in _find_links() for p in d.iterdir() if TORCH_WHEEL.search(p.name)]
    if not wheels:
        return None
    wheel = wheels[0]
    stat = wheel.stat()
    tag = f"{WHEELS_REPO}:{hashlib.sha256(f'{wheel.name} {stat.st_size}'.encode()).hexdigest()[:12]}"
    if _image_id(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="recap-wheels-", dir="/var/tmp") as tmp:
        archive = Path(tmp) / "wheels.tar"
        index = Path(tmp) / "index.html"
        quoted = wheel.name.replace("+", "%2B")
        index.write_text(f'<html><body><a href="{quoted}">{wheel.name}</a></body></html>\n')
        with tarfile.open(archive, "w") as tar:
            tar.add(index, arcname="simple/torch/index.html")
            tar.add(wheel, arcname=f"simple/torch/{wheel.name}")
        docker("import", str(archive), tag)
    return tag


# ----------------------------------------------------------------------------- images


def build_args() -> dict[str, str]:
    """Arguments for this host: the local base and, when found, the local torch wheel.
    Image ids (not only names) go into the tag hash, so a rebuilt base means new tags."""
    base = local_base()
    args = {"PYTHON_IMAGE": base, "_PYTHON_IMAGE_ID": _image_id(base) or ""}
    wheels = torch_wheels_image()
    if wheels:
        args.update(TORCH_WHEELS_IMAGE=wheels, TORCH_CPU_INDEX="file:///mnt/torch-wheels/simple",
                    _TORCH_WHEELS_ID=_image_id(wheels) or "")
    return args


def tags(targets: tuple[str, ...], args: dict[str, str], root: Path = REPO) -> dict[str, str]:
    digest = context_hash(args, root)
    return {target: f"recap-{target}:local-{digest}" for target in targets}


def build_image(target: str, tag: str, args: dict[str, str], root: Path = REPO, *options: str) -> str:
    """`docker build` of one target from `root` (a checkout); `options` such as --no-cache."""
    if _image_id(tag) and not options:
        return tag
    argv, env = build_command()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{tag.replace(':', '_').replace('/', '_')}.log"
    argv += ["--network", "host", "-f", str(root / "docker" / DOCKERFILE.name), "--target", target, "-t", tag,
             *options, *[f"--build-arg={k}={v}" for k, v in args.items() if not k.startswith("_")], str(root)]
    with open(log_path, "w") as log:
        code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=3600)
    if code != 0:
        lines = [line.strip() for line in log_path.read_text().splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "ERROR" in line or "error" in line), lines[-1] if lines else "")
        raise BuildError(f"image {tag} (target {target}): build failed: {reason[:300]} (log: {log_path})")
    return tag


def build_images(targets: tuple[str, ...] = CPU_TARGETS, root: Path = REPO, *options: str,
                 wanted: dict[str, str] | None = None) -> dict[str, str]:
    """Build the targets (concurrently: BuildKit shares their common layers); target -> tag."""
    args = build_args()
    wanted = wanted or tags(targets, args, root)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        futures = {target: pool.submit(build_image, target, tag, args, root, *options)
                   for target, tag in wanted.items()}
        errors = [str(f.exception()) for f in futures.values() if f.exception()]
    if errors:
        raise BuildError("; ".join(errors))
    return wanted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("engine", "images", "tags"))
    parser.add_argument("targets", nargs="*", help=f"default: {' '.join(CPU_TARGETS)}")
    args = parser.parse_args(argv)
    targets = tuple(args.targets) or CPU_TARGETS
    unknown = set(targets) - set(CPU_TARGETS)
    try:
        if unknown:
            raise BuildError(f"build: unknown target(s) {', '.join(sorted(unknown))}; CPU targets: {', '.join(CPU_TARGETS)}")
        os.environ["DOCKER_HOST"] = host = ensure_engine()
        if args.command == "engine":
            print(host)
        elif args.command == "tags":
            print(json.dumps(tags(targets, build_args()), indent=2))
        else:
            print(json.dumps(build_images(targets), indent=2))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
