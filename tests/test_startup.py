"""The light CLI paths (`--help`, `plugins`) must not import the heavy libraries (issue 12)."""
import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "datasets", "pandas", "pyarrow", "evaluate", "sklearn")

PROBE = """
import json, runpy, sys
sys.argv = ["sftkit", *sys.argv[1:]]
try:
    runpy.run_module("sftkit", run_name="__main__")
except SystemExit as exit_:
    assert exit_.code in (0, None), exit_.code
sys.stderr.write("HEAVY=" + json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)) + "\\n")
""" % (HEAVY,)


def heavy_modules(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], check=True,
                         capture_output=True, text=True).stderr
    return json.loads(out.split("HEAVY=")[-1])


def test_import_cli_is_light():
    out = subprocess.run([sys.executable, "-c", "import json, sys, sftkit.cli; "
                          "print(json.dumps(sorted(sys.modules)))"],
                         check=True, capture_output=True, text=True).stdout
    loaded = {m.split(".")[0] for m in json.loads(out)}
    assert not loaded & set(HEAVY)


def test_help_is_light():
    assert heavy_modules("--help") == []


def test_plugins_is_light():
    assert heavy_modules("plugins") == []
