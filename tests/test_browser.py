"""JupyterLab as a user meets it: index.ipynb opened in a real (headless Debian chromium) browser and run top to bottom.

The server is this checkout's `.venv` JupyterLab on 127.0.0.1 (free port, random token), with its config, data, runtime,
settings, workspaces and checkpoints in a temporary directory, so the only kernel it can find is the one `make setup`
registered in `.venv` (`--sys-prefix`). Screenshots are kept in tests/artifacts/ (gitignored). Everything started here is
stopped by PID; index.ipynb is restored byte for byte afterwards.
"""
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent                      # the .venv running the tests
NB = "nbs/index.ipynb"
ART = ROOT / "tests" / "artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
RUN_ALL_TIMEOUT = 600                                  # s; the target is 60 s on 2 idle cores, CI machines are slower
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-angle=swiftshader", "--enable-unsafe-swiftshader",   # software WebGL for nglview
                  "--window-size=1500,1100"]


def ensure_chromium():
    "Install Debian's chromium and its driver when missing (the test never skips)."
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"{CHROMIUM} / {CHROMEDRIVER} missing and not root: apt-get install -y chromium chromium-driver")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"], check=True, env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen):
    "Stop a process we started in its own session: SIGTERM to its process group, SIGKILL after 15 s."
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def kernel_process(server_pid: int):
    "The (single) ipykernel process the server started."
    import psutil
    kids = [p for p in psutil.Process(server_pid).children(recursive=True) if "ipykernel_launcher" in " ".join(p.cmdline())]
    assert len(kids) == 1, f"expected one kernel, found {len(kids)}"
    return kids[0]


def git_status() -> str:
    "`git status --porcelain` of index.ipynb ('' outside a git checkout)."
    r = subprocess.run(["git", "status", "--porcelain", "--", NB], cwd=ROOT, capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else ""


def git_blob(path: Path) -> str | None:
    "The blob git would store for `path` (clean filters applied), or None outside a git checkout."
    r = subprocess.run(["git", "hash-object", f"--path={NB}", str(path)], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A JupyterLab server on 127.0.0.1 from .venv; yields (base_url, token, tmp dir, server PID)."
    tmp = tmp_path_factory.mktemp("lab")
    settings = tmp / "settings"
    # no autosave: the test saves once, explicitly, to check what git sees
    (settings / "@jupyterlab" / "docmanager-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "JUPYTER_PATH", "JUPYTER_CONFIG_PATH")}
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"), JUPYTER_PLATFORM_DIRS="1")
    port, token = free_port(), os.urandom(16).hex()
    log = open(tmp / "lab.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp / 'workspaces'}",
         f"--FileCheckpoints.root_dir={tmp / 'checkpoints'}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.news_url=", "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
        + (["--allow-root"] if os.geteuid() == 0 else []),
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({proc.returncode}):\n{(tmp / 'lab.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() - t0 > 120:
                raise RuntimeError("jupyter lab did not answer within 120 s")
            time.sleep(0.5)
        yield base, token, tmp, proc.pid
    finally:
        stop(proc)
        log.close()
        if (tmp / "lab.log").exists():
            ART.mkdir(parents=True, exist_ok=True)
            shutil.copy(tmp / "lab.log", ART / "lab.log")


@pytest.fixture(scope="module")
def browser(lab):
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    tmp = lab[2]
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in CHROMIUM_FLAGS + [f"--user-data-dir={tmp / 'chromium-profile'}"]:
        opts.add_argument(f)
    # chromedriver in its own session: it and the chromium processes it starts share one process group, led by its PID
    service = Service(CHROMEDRIVER, log_output=str(tmp / "chromedriver.log"), popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=opts)
    driver_pid = service.process.pid
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            try:
                os.killpg(driver_pid, signal.SIGKILL)  # normally all gone after quit(); by PID if not
            except ProcessLookupError:
                pass


# JavaScript against the JupyterLab application object (LabApp.expose_app_in_browser)
# The notebook is looked up among the main-area widgets by path and activated: `shell.currentWidget` alone stays null in some
# headless Chromium builds (no window focus), and the notebook commands act on the active notebook.
JS_STATE = """
const app = window.jupyterapp;
if (!app) return null;
const w = Array.from(app.shell.widgets('main')).find(x => x.context && x.content && x.context.path === arguments[0]);
if (!w || !w.content.widgets || !w.sessionContext || !w.sessionContext.session) return null;
if (app.shell.currentWidget !== w) app.shell.activateById(w.id);
const k = w.sessionContext.session.kernel;
const code = w.content.widgets.filter(c => c.model.type === 'code');
return {kernel: k ? k.name : null, status: k ? k.status : null, path: w.context.path,
        counts: code.map(c => c.model.executionCount),
        errors: code.flatMap((c, i) => c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                                   .map(o => `code cell ${i}: ${o.ename}: ${o.evalue}`)),
        pending: Array.from(w.content.node.querySelectorAll('.jp-InputArea-prompt')).filter(p => p.textContent.includes('*')).length};
"""


def wait_for(driver, fn, timeout, what, poll=0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = fn()
        if v:
            return v
        time.sleep(poll)
    shot(driver, f"timeout_{what.replace(' ', '_')}")
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def shot(driver, name):
    ART.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ART / f"{name}.png"))


def test_index_runs_in_jupyterlab(lab, browser):
    base, token, tmp, server_pid = lab
    driver = browser
    nb_path = ROOT / NB
    original = nb_path.read_bytes()
    blob_before = git_blob(nb_path)
    try:
        driver.get(f"{base}/lab/tree/{NB}?token={token}&reset")
        state = wait_for(driver, lambda: (s := driver.execute_script(JS_STATE, NB)) and s["status"] == "idle" and s,
                         180, "the kernel of index.ipynb")
        assert state["kernel"] == "xtalnb", f"index.ipynb runs on kernel {state['kernel']!r}, not this checkout's 'xtalnb'"
        shot(driver, "01_opened")

        kernel = kernel_process(server_pid)
        cpu0 = sum(kernel.cpu_times()[:4])
        t0 = time.time()
        driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")

        def finished():
            s = driver.execute_script(JS_STATE, NB)
            if s is None:
                return None
            if s["errors"]:
                return s                                    # Run All stops at an error
            return s if all(c is not None for c in s["counts"]) and s["status"] == "idle" and not s["pending"] else None
        state = wait_for(driver, finished, RUN_ALL_TIMEOUT, "Run All")
        run_all, cpu = time.time() - t0, sum(kernel.cpu_times()[:4]) - cpu0
        load = os.getloadavg()[0]
        (ART / "run_all_seconds.txt").write_text(f"wall {run_all:.1f} s, kernel CPU {cpu:.1f} s, load average {load:.1f}\n")
        print(f"\nindex.ipynb Run All in the browser: {run_all:.1f} s wall, {cpu:.1f} s of kernel CPU (load average {load:.1f})")
        shot(driver, "02_ran_all")
        assert not state["errors"], f"error outputs: {state['errors']}"
        # the budget is 60 s on 2 cores; wall time depends on what else runs, CPU time does not: at most 60 CPU-seconds
        # finishes within 60 s on one free core
        assert cpu <= 60, f"Run All used {cpu:.0f} s of kernel CPU (budget 60 s)"

        # an nglview view renders: no widget error text, and a WebGL canvas that shows something
        text_ok = lambda: not any(t in driver.find_element("tag name", "body").text
                                  for t in ("Error displaying widget", "not registered", "Failed to load model class"))
        canvases = wait_for(driver, lambda: driver.execute_script("""
            return Array.from(document.querySelectorAll('.jp-OutputArea-output canvas')).filter(
                c => c.width > 50 && c.height > 50 && (c.getContext('webgl2') || c.getContext('webgl')));"""),
            120, "an nglview WebGL canvas")
        assert text_ok(), "a widget failed to display"
        def drawn():
            "Screenshot of the first nglview canvas; truthy once NGL has drawn a structure into it (not a blank canvas)."
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", canvases[0])
            img = Image.open(io.BytesIO(canvases[0].screenshot_as_png)).convert("RGB")
            colours = img.getcolors(maxcolors=1 << 24)
            return img if len(colours) > 20 else None
        img = wait_for(driver, drawn, 90, "nglview to draw a structure", poll=2)
        img.save(ART / "04_nglview_canvas.png")
        shot(driver, "03_nglview")
        assert text_ok(), "a widget failed to display"

        # a matplotlib figure inline
        figs = driver.execute_script("""
            return Array.from(document.querySelectorAll('.jp-OutputArea-output img')).filter(
                i => i.src.startsWith('data:image/png') && i.naturalWidth > 200);""")
        assert figs, "no inline figure (a PNG output) in index.ipynb"
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", figs[0])
        shot(driver, "05_figure")

        # saving the run notebook (what autosave does) writes back exactly the source: nothing for git to see
        status_before = git_status()
        mtime = nb_path.stat().st_mtime_ns
        driver.execute_script("""
            const w = Array.from(window.jupyterapp.shell.widgets('main')).find(x => x.context && x.context.path === arguments[0]);
            w.context.save();""", NB)   # what docmanager:save does for the active notebook
        wait_for(driver, lambda: nb_path.stat().st_mtime_ns != mtime, 60, "the save of index.ipynb")
        time.sleep(1)
        saved = json.loads(nb_path.read_text())
        assert saved["metadata"]["kernelspec"]["name"] == "xtalnb"
        assert nb_path.read_bytes() == original, "saving index.ipynb after Run All changed the file"
        assert git_status() == status_before, "after Run All + save, git status changed"
        if blob_before is not None:
            assert git_blob(nb_path) == blob_before, "after Run All + save, git sees index.ipynb modified"
    finally:
        if nb_path.read_bytes() != original:
            nb_path.write_bytes(original)
