"""Install and packaging, as a new user meets them.

- `python -m build` makes an sdist that holds every source and test file, and builds a wheel
  from it in a clean directory;
- the build prints no warning; its metadata names the licence as SPDX, links the source, issues and
  documentation, and classifies the package (Linux, the Python versions tested, monitoring);
- the sdist leaves out what building left in a checkout (bytecode, objects, the extension);
- the wheel is tagged abi3 (the extension uses only the stable ABI), holds every module and the
  licence, installs into a fresh virtual environment, imports there and decodes real kernel bytes;
- `make wheel` on a fresh clone makes an sdist and a wheel repaired to the manylinux tag its
  extension needs (no run path, only libc), which `twine check` passes; that wheel installs into a
  fresh venv of the distribution's own python3 and of every Python version the classifiers claim,
  decodes kernel bytes there and runs its command;
- a source tree without its built extension says what happened and what to do;
- a build without a C compiler (or without Python.h) says what is missing and points to the README;
- `make install` works with a distribution's python3 that refuses `pip install` (PEP 668): it
  installs into the project's own virtual environment.

The builds are slow (they fetch setuptools and cffi into isolated build environments), so each
is made once per session, from a copy of the repository's files that git tracks or would track.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import venv
import zipfile

import pytest

from under_ci import kernel_unavailable_reason, unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "csrc"))
import build_ffi  # noqa: E402

from taskstats_fast import _version  # noqa: E402

CAPTURE = os.path.join("tests", "data", "captures", "6.12")
# what a user's checkout never holds: built or installed things
_NOT_SOURCE = re.compile(r"(^|/)(\.git|\.venv|build|dist|__pycache__|[^/]*\.egg-info)(/|$)|\.(so|o|pyc)$")


def _needs(condition: bool, why: str):
    if not condition:
        unavailable(why)


def source_files():
    """The repository's source files, relative to ROOT: what git tracks or would track."""
    if os.path.isdir(os.path.join(ROOT, ".git")) or os.path.isfile(os.path.join(ROOT, ".git")):
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split("\n")
    else:
        out = [os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(ROOT) for f in fs]
    return sorted(f for f in out if f and not _NOT_SOURCE.search(f) and os.path.isfile(os.path.join(ROOT, f)))


@pytest.fixture(scope="session")
def clean_source(tmp_path_factory):
    """A copy of the repository as a fresh clone has it: no extension built, no virtual environment."""
    dest = tmp_path_factory.mktemp("source") / "taskstats_fast"
    for rel in source_files():
        os.makedirs(dest / os.path.dirname(rel), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), dest / rel)
    return dest


@pytest.fixture(scope="session")
def dists(clean_source, tmp_path_factory):
    """(sdist, wheel) from `python -m build`, which builds the wheel from the unpacked sdist."""
    try:
        import build  # noqa: F401
    except ImportError:
        _needs(False, "the `build` package is not installed (it is in the test extra: `make install`)")
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(clean_source)],
                         capture_output=True, text=True, env=_build_env())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not _warnings(run.stdout + run.stderr)
    sdist, = out.glob("*.tar.gz")
    wheel, = out.glob("*.whl")
    return sdist, wheel


def _build_env():
    """The environment a user builds in: bytecode on (setuptools warns when it is switched off)."""
    env = _without_pythonpath()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _warnings(log: str):
    """The build's warnings: setuptools' `warning:` lines and Python warnings.  pip's `WARNING:` lines
    are left out: they are about this machine's index configuration, not about the package."""
    return [line for line in log.splitlines() if re.search(r"^warning:|Warning\b|[Dd]eprecat", line)]


def _metadata(wheel) -> str:
    with zipfile.ZipFile(wheel) as z:
        name, = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return z.read(name).decode()


def claimed_pythons(metadata: str):
    """The Python versions a wheel's classifiers claim, as (major, minor), oldest first."""
    found = re.findall(r"^Classifier: Programming Language :: Python :: (\d+)\.(\d+)$", metadata, re.M)
    return sorted((int(major), int(minor)) for major, minor in found)


def test_the_metadata_names_licence_links_and_classifiers(dists):
    for dist in dists:
        if dist.name.endswith(".whl"):
            metadata = _metadata(dist)
        else:
            with tarfile.open(dist) as tar:
                member, = [m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")]
                metadata = tar.extractfile(member).read().decode()
        headers = metadata.split("\n\n", 1)[0]
        assert re.search(rf"^Version: {re.escape(_version.__version__)}$", headers, re.M), dist.name
        assert re.search(r"^License-Expression: MIT$", headers, re.M), dist.name
        assert re.search(r"^License-File: LICENSE$", headers, re.M)
        assert not re.search(r"^(License:|Classifier: License ::)", headers, re.M)  # the SPDX expression only
        assert re.search(r"^Author: \S", headers, re.M)
        urls = dict(re.findall(r"^Project-URL: ([^,]+), (https://\S+)$", headers, re.M))
        assert {"Source", "Issues", "Documentation"} <= set(urls)
        classifiers = set(re.findall(r"^Classifier: (.*)$", headers, re.M))
        assert {"Operating System :: POSIX :: Linux", "Topic :: System :: Monitoring"} <= classifiers
        assert not [c for c in classifiers if c.startswith("Operating System ::") and "Linux" not in c]
        oldest = claimed_pythons(metadata)[0]
        assert re.search(rf"^Requires-Python: >={oldest[0]}\.{oldest[1]}$", headers, re.M)
        assert re.search(r"^Description-Content-Type: text/markdown$", headers, re.M)
        assert "## Install" in metadata.split("\n\n", 1)[1]   # the README is the long description


def test_the_sdist_leaves_out_what_building_left_in_the_checkout(clean_source, tmp_path):
    tree = tmp_path / "built-checkout"
    shutil.copytree(clean_source, tree)
    leftovers = ["taskstats_fast/_tsf_cffi.abi3.so", "taskstats_fast/_tsf_cffi.c", "csrc/tsf.o",
                 "taskstats_fast/__pycache__/layout.cpython-311.pyc", "tests/__pycache__/wire.cpython-311.pyc"]
    for rel in leftovers:
        os.makedirs(tree / os.path.dirname(rel), exist_ok=True)
        (tree / rel).write_bytes(b"built")
    run = subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "out"), str(tree)],
                         capture_output=True, text=True, env=_build_env())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not _warnings(run.stdout + run.stderr)
    sdist, = (tmp_path / "out").glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        shipped = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert not [f for f in leftovers if f in shipped]
    assert "taskstats_fast/layout.py" in shipped and "csrc/build_ffi.py" in shipped


@pytest.fixture(scope="session")
def fresh_venv(dists, tmp_path_factory):
    """A new virtual environment holding only the wheel and its dependencies: its python."""
    env = tmp_path_factory.mktemp("venv") / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    run = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(dists[1])],
                         capture_output=True, text=True, env=_without_pythonpath())
    assert run.returncode == 0, run.stdout + run.stderr
    return python


def test_the_sdist_holds_every_source_and_test_file(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        shipped = {n[len(top) + 1:] for n in tar.getnames()}
    wanted = [f for f in source_files()
              if f.split("/")[0] in ("csrc", "tests", "bench", "contrib", "taskstats_fast")
              or f in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "setup.py", "Makefile")]
    assert not [f for f in wanted if f not in shipped]
    # the files whose absence broke the sdist before
    assert {"csrc/build_ffi.py", "tests/conftest.py", "tests/wire.py"} <= shipped
    assert {"contrib/man/taskstats-fast.1", "contrib/completion/taskstats-fast.bash"} <= shipped
    assert any(f.startswith("tests/data/") for f in shipped)


def test_the_wheel_is_tagged_abi3_like_its_extension(dists):
    _, wheel = dists
    name, version, python_tag, abi_tag, platform_tag = wheel.name[:-len(".whl")].split("-")
    with zipfile.ZipFile(wheel) as z:
        extension = [n for n in z.namelist() if n.startswith("taskstats_fast/_tsf_cffi")]
        tags = re.findall(r"^Tag: (.*)$", z.read(f"{name}-{version}.dist-info/WHEEL").decode(), re.M)
    assert len(extension) == 1
    if build_ffi.STABLE_ABI:
        assert (python_tag, abi_tag) == ("cp39", "abi3")
        assert extension[0].endswith(".abi3.so")
        assert tags == [f"cp39-abi3-{platform_tag}"]
    else:  # a debug or free-threaded CPython, or another implementation: an ordinary tag
        assert abi_tag != "abi3"


def test_the_wheel_holds_every_module_and_the_licence(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    modules = [f for f in source_files() if f.startswith("taskstats_fast/") and f.endswith(".py")]
    assert not [m for m in modules if m not in names]
    assert "taskstats_fast/py.typed" in names
    licence = [n for n in names if re.match(r"[^/]+\.dist-info/(licenses/)?LICENSE$", n)]
    assert licence
    with zipfile.ZipFile(wheel) as z:
        assert "MIT License" in z.read(licence[0]).decode()


def test_the_installed_wheel_imports_and_decodes_kernel_bytes(fresh_venv, clean_source, tmp_path):
    with open(clean_source / CAPTURE / "manifest.json") as f:
        children = json.load(f)["captures"]["exit_single"]["expect"]["children"]
    script = ("import sys, taskstats_fast as tsf\n"
              "records = tsf.decode(open(sys.argv[1], 'rb').read())\n"
              "print(tsf.__file__)\n"
              "print(sorted(int(p) for p in records['ac_pid'][records['kind'] == tsf.KIND_PID]))\n")
    run = subprocess.run([str(fresh_venv), "-c", script, str(clean_source / CAPTURE / "exit_single.bin")],
                         capture_output=True, text=True, cwd=tmp_path, env=_without_pythonpath())
    assert run.returncode == 0, run.stderr
    where, pids = run.stdout.splitlines()
    assert where.startswith(str(fresh_venv.parent.parent))
    assert pids == str(sorted(c["pid"] for c in children if "PID" in c["records"]))
    script = subprocess.run([str(fresh_venv.parent / "taskstats-fast"), "--help"], capture_output=True, text=True,
                            env=_without_pythonpath())
    assert script.returncode == 0 and "record" in script.stdout


def test_a_source_tree_without_its_extension_says_what_to_do(fresh_venv, clean_source):
    # a non-editable install, and Python started in the repository root: the source tree wins
    run = subprocess.run([str(fresh_venv), "-c", "import taskstats_fast"], capture_output=True, text=True,
                         cwd=clean_source, env=_without_pythonpath())
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: ")
    assert "source tree" in last and "pip install -e ." in last and "make install" in last


def test_a_build_without_a_compiler_names_what_is_missing(clean_source, tmp_path):
    env = dict(_without_pythonpath(), CC="tsf-no-such-compiler")
    run = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
                          "--build-temp", str(tmp_path / "temp")],
                         capture_output=True, text=True, cwd=clean_source, env=env)
    assert run.returncode != 0
    assert ("needs a C compiler to build its extension, and `tsf-no-such-compiler` was not found"
            in run.stderr), run.stderr[-2000:]
    assert "README" in run.stderr


def test_a_build_without_python_headers_names_them(tmp_path):
    compiler = [shutil.which("cc") or shutil.which("gcc") or sys.executable]
    problem = build_ffi.missing_build_tool(compiler, [str(tmp_path)])
    assert problem is not None and "Python.h" in problem and "python3-dev" in problem and "README" in problem
    assert build_ffi.missing_build_tool(compiler, [str(tmp_path), sysconfig.get_paths()["include"]]) is None \
        or not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))


def _distribution_python():
    """The distribution's own python3 when it refuses pip outside a virtual environment (PEP 668)."""
    for python in ("/usr/bin/python3",):
        if os.path.exists(python):
            stdlib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"],
                                    capture_output=True, text=True).stdout.strip()
            if stdlib and os.path.exists(os.path.join(stdlib, "EXTERNALLY-MANAGED")):
                return python
    return None


def test_make_install_uses_its_own_venv_with_an_externally_managed_python(clean_source, tmp_path):
    python = _distribution_python()
    _needs(python is not None, "no externally-managed /usr/bin/python3 here (PEP 668) to install with")
    _needs(shutil.which("make") is not None, "make is not installed")
    work = tmp_path / "clone"
    shutil.copytree(clean_source, work)
    run = subprocess.run(["make", "install", f"PYTHON={python}", "EXTRAS="], cwd=work, capture_output=True,
                         text=True, env=_without_pythonpath())
    if run.returncode != 0 and os.geteuid() != 0 and "needs:" in run.stderr:
        _needs(False, f"make install needs Debian packages that only root can install: {run.stderr.strip()}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    command = work / ".venv" / "bin" / "taskstats-fast"
    help_ = subprocess.run([str(command), "--help"], capture_output=True, text=True, cwd=tmp_path,
                           env=_without_pythonpath())
    assert help_.returncode == 0, help_.stderr
    where = subprocess.run([str(work / ".venv" / "bin" / "python"), "-c",
                            "import taskstats_fast, sys; print(taskstats_fast.__file__); print(sys._base_executable)"],
                           capture_output=True, text=True, cwd=tmp_path, env=_without_pythonpath())
    module, base = where.stdout.splitlines()
    assert module.startswith(str(work))
    assert os.path.realpath(base) == os.path.realpath(python)


def _without_pythonpath():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def test_make_says_what_it_would_install_and_goes_on_without_root(tmp_path):
    """Without root, `make test-deps` installs nothing, names what is missing and does not stop
    `make test` (the tests that need the tools skip and say why)."""
    if os.geteuid() != 0:
        unavailable("needs root to run make as another user")
    _needs(shutil.which("make") is not None, "make is not installed")
    work = tempfile.mkdtemp(prefix="tsf-make-", dir="/tmp")
    try:
        os.chmod(work, 0o755)
        shutil.copy(os.path.join(ROOT, "Makefile"), work)
        os.chmod(os.path.join(work, "Makefile"), 0o644)
        run = subprocess.run(["make", "--no-print-directory", "test-deps",
                              "TEST_PACKAGES=tsf-no-such-package cppcheck"],
                             cwd=work, capture_output=True, text=True, preexec_fn=_become_nobody)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == ("make: not root, so not installing tsf-no-such-package; the tests that need "
                                  "them will skip (see Makefile)")


def _become_nobody():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


# ---- `make wheel` on a fresh clone, and its wheel under every Python claimed ----

DISTRIBUTION_PYTHON = "/usr/bin/python3"


def _claimed_in_pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    return sorted({(int(a), int(b)) for a, b in re.findall(r'"Programming Language :: Python :: (\d+)\.(\d+)"', text)})


def _interpreter(version):
    """A real interpreter of ``version`` (not a pyenv shim, which runs whichever version is selected)."""
    major, minor = version
    roots = [os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")]
    candidates = []
    for root in roots:
        versions = os.path.join(root, "versions")
        if os.path.isdir(versions):
            patches = [v for v in os.listdir(versions) if re.fullmatch(rf"{major}\.{minor}\.\d+", v)]
            for v in sorted(patches, key=lambda v: int(v.split(".")[2]), reverse=True):
                candidates.append(os.path.join(versions, v, "bin", f"python{major}.{minor}"))
    candidates += [f"/usr/bin/python{major}.{minor}", f"/usr/local/bin/python{major}.{minor}"]
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


@pytest.fixture(scope="session")
def made_wheel(tmp_path_factory):
    """(dist directory, `make wheel` output) of a fresh clone of this repository's HEAD."""
    _needs(shutil.which("make") is not None, "make is not installed")
    _needs(shutil.which("git") is not None and os.path.exists(os.path.join(ROOT, ".git")),
           "`make wheel` is tested on a git clone, and this is no git checkout")
    clone = tmp_path_factory.mktemp("clone") / "taskstats_fast"
    subprocess.run(["git", "clone", "-q", ROOT, str(clone)], check=True, capture_output=True)
    run = subprocess.run(["make", "--no-print-directory", "wheel"], cwd=clone, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=_without_pythonpath())
    log = run.stdout
    assert run.returncode == 0, log[-4000:]
    return clone, log


def test_make_wheel_makes_a_manylinux_wheel_and_sdist_that_twine_passes(made_wheel):
    clone, log = made_wheel
    names = sorted(p.name for p in (clone / "dist").iterdir())
    assert len(names) == 2 and names[0].endswith(".whl") and names[1].endswith(".tar.gz"), names
    wheel = clone / "dist" / names[0]
    platforms = wheel.name[:-len(".whl")].split("-")[4].split(".")
    assert "linux_x86_64" not in platforms and any(p.startswith("manylinux_2_") for p in platforms), platforms
    twine = log[log.index("twine check"):]   # its lines wrap at 80 columns: count verdicts, not lines
    assert twine.count("PASSED") == 2 and "FAILED" not in twine, twine
    assert not _warnings(log), _warnings(log)
    # the tag is the one auditwheel finds the extension consistent with, and no build path is left in it
    show = subprocess.run([str(clone / "build" / "dist-venv" / "bin" / "auditwheel"), "show", str(wheel)],
                          capture_output=True, text=True)
    assert show.returncode == 0, show.stderr
    tag, = re.findall(r'consistent\s+with\s+the\s+following\s+platform\s+tag:\s+"([^"]+)"', show.stdout)
    assert tag in platforms
    unpacked = clone / "unpacked"
    with zipfile.ZipFile(wheel) as z:
        extension, = [n for n in z.namelist() if n.startswith("taskstats_fast/_tsf_cffi")]
        z.extract(extension, unpacked)
    dynamic = subprocess.run(["readelf", "-d", str(unpacked / extension)], capture_output=True, text=True).stdout
    assert re.findall(r"\(NEEDED\).*\[(.*)\]", dynamic) == ["libc.so.6"]
    assert "RPATH" not in dynamic and "RUNPATH" not in dynamic
    assert claimed_pythons(_metadata(wheel)) == _claimed_in_pyproject()


def _install_wheel(python, wheel, where):
    """A fresh venv of ``python`` with only ``wheel`` and its dependencies: its bin/ directory, or why not."""
    env = where / "env"
    run = subprocess.run([python, "-m", "venv", "--without-pip", str(env)], capture_output=True, text=True)
    if run.returncode != 0:
        return f"{python} -m venv failed: {run.stderr}"
    run = subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q",
                          "--no-compile", str(wheel)], capture_output=True, text=True, env=_without_pythonpath())
    return env / "bin" if run.returncode == 0 else run.stdout + run.stderr


TESTED_PYTHONS = ["distribution"] + [f"{a}.{b}" for a, b in _claimed_in_pyproject()]


def _python_of(version):
    if version == "distribution":
        return DISTRIBUTION_PYTHON if os.access(DISTRIBUTION_PYTHON, os.X_OK) else None
    return _interpreter(tuple(int(n) for n in version.split(".")))


@pytest.fixture(scope="session")
def wheel_envs(made_wheel, tmp_path_factory):
    """{version: bin/ of a fresh venv holding the made wheel, or why there is none}, installed side by
    side: each install is mostly waiting for pip, and one after another they would take minutes."""
    clone, _ = made_wheel
    wheel, = (clone / "dist").glob("*.whl")
    pythons = {v: _python_of(v) for v in TESTED_PYTHONS}
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {v: pool.submit(_install_wheel, python, wheel, tmp_path_factory.mktemp(f"wheel-{v}"))
                   for v, python in pythons.items() if python}
    return {v: futures[v].result() if v in futures else None for v in TESTED_PYTHONS}


@pytest.mark.parametrize("version", TESTED_PYTHONS)
def test_the_made_wheel_runs_under_each_python(version, made_wheel, wheel_envs, tmp_path):
    bin_ = wheel_envs[version]
    if version == "distribution":
        _needs(bin_ is not None, f"no distribution python3 at {DISTRIBUTION_PYTHON}")
    else:
        _needs(bin_ is not None, f"the classifiers claim Python {version}, and no interpreter of it is here "
                                 "(pyenv's or the distribution's) to test the wheel with")
    assert not isinstance(bin_, str), bin_
    clone, _ = made_wheel
    capture = clone / CAPTURE
    with open(capture / "manifest.json") as f:
        children = json.load(f)["captures"]["exit_single"]["expect"]["children"]
    script = ("import sys, taskstats_fast as tsf\n"
              "records = tsf.decode(open(sys.argv[1], 'rb').read())\n"
              "print(sys.version_info[:2])\n"
              "print(tsf.__file__)\n"
              "print(sorted(int(p) for p in records['ac_pid'][records['kind'] == tsf.KIND_PID]))\n")
    run = subprocess.run([str(bin_ / "python"), "-c", script, str(capture / "exit_single.bin")],
                         capture_output=True, text=True, cwd=tmp_path, env=_without_pythonpath())
    assert run.returncode == 0, run.stderr
    running, where, pids = run.stdout.splitlines()
    if version != "distribution":
        assert running == str(tuple(int(n) for n in version.split(".")))
    assert where.startswith(str(bin_.parent))
    assert pids == str(sorted(c["pid"] for c in children if "PID" in c["records"]))
    command = str(bin_ / "taskstats-fast")
    for argv in (["--version"], ["--help"]):
        out = subprocess.run([command, *argv], capture_output=True, text=True, env=_without_pythonpath())
        assert out.returncode == 0 and not out.stderr, out.stderr
    if kernel_unavailable_reason() is None:   # as root on a TASKSTATS kernel: the extension at work
        out = subprocess.run([command, "pid", str(os.getpid()), "--json"], capture_output=True, text=True,
                             env=_without_pythonpath())
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)
