"""A real SoftHSM2 token for the PKCS#11 tests, in a private SOFTHSM2_CONF.

SoftHSM reads SOFTHSM2_CONF once per process, so each pytest process gets
one configuration and one token, and each test its own key ids. The tests
skip only when SoftHSM2 is not installed (with the reason shown); under CI
(CI set) that is an error instead: .ci/run installs it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
           "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so")
USER_PIN, SO_PIN, LABEL = "4321", "87654321", "tgflow-test"


def init_token(util: str, env: dict, label: str) -> None:
    subprocess.run([util, "--init-token", "--free", "--label", label, "--pin", USER_PIN, "--so-pin", SO_PIN],
                   env=env, check=True, capture_output=True)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory):
    module = next((m for m in MODULES if os.path.isfile(m)), None)
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        if os.environ.get("CI"):
            pytest.fail("SoftHSM2 is not installed; .ci/run must apt-get install softhsm2")
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (pip install 'tgflow[pkcs11]')")
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # before the module is first loaded in this process
    env = dict(os.environ)
    init_token(util, env, LABEL)
    return {"module": module, "util": util, "env": env, "label": LABEL, "root": root}


@pytest.fixture
def token(softhsm, monkeypatch):
    """The token, the environment tgflow reads, and a URI with a key id of this test's own."""
    monkeypatch.setenv("TGFLOW_PKCS11_MODULE", softhsm["module"])
    monkeypatch.setenv("TGFLOW_PKCS11_PIN", USER_PIN)
    monkeypatch.delenv("TGFLOW_PKCS11_PIN_FILE", raising=False)
    key_id = os.urandom(8).hex()
    uri = f"pkcs11:token={LABEL};object=release;id=" + "".join(f"%{key_id[i:i + 2]}" for i in range(0, 16, 2))
    return {**softhsm, "uri": uri, "id": bytes.fromhex(key_id)}
