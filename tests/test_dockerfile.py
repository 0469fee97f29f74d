"""The runner image: non-root, offline, and built from what the repo ships.

No Docker engine runs where the tests run, so this checks the Dockerfile's
promises statically; `docker build` is the real test on a machine with one.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "Dockerfile").read_text()


def test_runs_as_non_root_and_offline():
    final = TEXT[TEXT.rindex("FROM "):]
    assert "USER 10001:10001" in final
    for var in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "HF_DATASETS_OFFLINE=1"):
        assert var in final


def test_copies_exist_and_the_export_default_uid_matches():
    for line in TEXT.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src
    k8s = (ROOT / "runners" / "export" / "k8s.py").read_text()
    assert '"runAsUser": 10001' in k8s and '"readOnlyRootFilesystem": True' in k8s
