"""GPU-only checks (marker `gpu`); they skip cleanly where no CUDA GPU exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_round_on_gpu_trains_in_bf16_and_packages(workspace, capsys):
    from tgflow_cli.main import main
    from tgsp.package import open_package

    spec = workspace.spec(training={"steps": 6, "batch_size": 8, "learning_rate": 0.01, "seed": 3, "max_seq_len": 64,
                                    "packing": True})
    assert main(["peft", "run", "--spec", str(spec), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    with open_package(Path(report["package"])) as pkg:
        env = next(e["data"] for e in pkg.evidence if e["type"] == "tgflow.round.start")["environment"]
    assert env["device"] == "cuda" and env["dtype"] == "bfloat16" and env["gpu"]
    assert main(["tgsp", "verify", report["package"]]) == 0


def test_packing_has_no_cross_contamination_on_gpu_bf16():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from runners.learn.batches import (IGNORE, Tokenized, collate, collate_packed, forward_packed, pack,
                                       per_example_loss, per_example_loss_packed, tokenize)
    from runners.data.feeds import Example
    from tests.runners.conftest import EXAMPLES

    tok = AutoTokenizer.from_pretrained(EXAMPLES / "tiny-base")
    model = AutoModelForCausalLM.from_pretrained(EXAMPLES / "tiny-base", dtype=torch.bfloat16).cuda().eval()
    items = tokenize(tok, [Example("", "The baker visited the harbour at noon."), Example("Q:", " The sky was clear."),
                           Example("", "Snow fell quietly all night.")], 64)
    with torch.no_grad():
        ids, pos, labels, seg = collate_packed(pack(items, 64), tok.pad_token_id, "cuda")
        packed = per_example_loss_packed(forward_packed(model, ids, pos), labels, seg, len(items))
        for i, item in enumerate(items):
            ids, mask, lab = collate([Tokenized(item.input_ids, [IGNORE] + item.labels[1:])], tok.pad_token_id, "cuda")
            alone = per_example_loss(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, lab)[0]
            assert packed[i].item() == pytest.approx(alone.item(), rel=2e-2)


def test_dp_round_on_gpu_in_bf16(workspace, capsys, monkeypatch):
    """A DP round on the GPU: bf16 weights, fp32 per-example clipping, noise drawn on the device."""
    from tgflow_cli.main import main
    from tgsp.package import open_package

    monkeypatch.setenv("TGFLOW_DP_TEST_SEED", "1")
    spec = workspace.spec(privacy={"mode": "dp", "dp": {"max_grad_norm": 1.0, "noise_multiplier": 1.0, "target_delta": 1e-4}},
                          eval={"type": "jsonl", "uri": "feeds/support-eval.jsonl", "max_examples": 16})
    assert main(["peft", "run", "--spec", str(spec), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    with open_package(Path(report["package"])) as pkg:
        assert pkg.manifest["privacy"]["steps"] == 6 and pkg.manifest["privacy"]["epsilon"] > 0
        env = next(e["data"] for e in pkg.evidence if e["type"] == "tgflow.round.start")["environment"]
    assert env["device"] == "cuda" and env["dtype"] == "bfloat16"


def test_dp_clipping_in_bf16_on_gpu_matches_fp32():
    """The per-example norms from bf16 activations agree with an fp32 run of the same model."""
    from tests.runners.test_dp_sgd import _clipped_sum, _examples, _model

    items = _examples([5, 11, 3, 16, 8, 2])
    ref_model = _model("llama")
    _, ref_norms = _clipped_sum(ref_model, items, 1e9)
    model = _model("llama").to("cuda", torch.bfloat16)
    import runners.learn.dp_sgd as dp

    clipper = dp.PerExampleClipper(model, 1e9)
    from runners.learn.batches import collate, per_example_loss

    ids, mask, labels = collate(items, 0, "cuda")
    per_example_loss(model(input_ids=ids, attention_mask=mask).logits, labels).sum().backward()
    norms = clipper.accumulate(torch.ones(len(items), device="cuda"))
    clipper.remove()
    assert norms.dtype == torch.float32
    assert torch.allclose(norms.cpu(), ref_norms.float(), rtol=0.1)  # bf16 activations: about 1% is typical
