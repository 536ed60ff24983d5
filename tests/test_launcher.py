"""The command starts without the heavy libraries, and a Ctrl-C while it loads is one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

HEAVY = ["peft", "accelerate", "matplotlib", "scipy", "lm_eval", "datasets"]


def test_help_loads_none_of_the_heavy_libraries():
    code = (
        "import json, sys\n"
        "from prunekit.launcher import main\n"
        "sys.argv = ['prunekit', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: prunekit" in out
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_import_prunekit_is_light_until_a_name_is_used():
    code = (
        "import sys, prunekit\nassert 'torch' not in sys.modules\n"
        "prunekit.PrunekitError\nassert 'prunekit.api' not in sys.modules\nprint('ok')"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "ok"


def test_unknown_public_name_is_an_attribute_error():
    import prunekit

    try:
        prunekit.no_such_name  # noqa: B018
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("expected AttributeError")


def test_ctrl_c_while_loading_is_one_line():
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from prunekit.launcher import main; sys.exit(main())", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.4)  # inside the import of torch (over a second on any machine)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == ["prunekit: interrupted while starting; nothing was written"]
