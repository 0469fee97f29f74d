"""Training objectives (training.loss): each built-in against a reference written directly in
torch, a plug-in found through its entry point and recorded, the spec's refusals, and the
objective really changing what a round learns."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from runners.learn import losses  # noqa: E402
from runners.learn.batches import IGNORE, Tokenized, per_example_loss  # noqa: E402
from runners.spec import LossSpec, TrainingSpec  # noqa: E402


def _batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 11, generator=g) * 3
    labels = torch.tensor([[IGNORE, 4, 7, 1, 9, IGNORE], [IGNORE, IGNORE, 2, 2, 10, 0]])
    return logits, labels


def _reference(logits, labels, per_token):
    """Position t predicts labels[t + 1]; each example's mean over its real targets."""
    out = []
    for b in range(logits.shape[0]):
        vals = [per_token(torch.log_softmax(logits[b, t], -1), int(labels[b, t + 1]))
                for t in range(logits.shape[1] - 1) if labels[b, t + 1] != IGNORE]
        out.append(torch.stack(vals).mean())
    return torch.stack(out)


@pytest.mark.parametrize("spec, per_token", [
    (LossSpec(), lambda lp, y: -lp[y]),
    (LossSpec(name="label_smoothing", smoothing=0.2), lambda lp, y: 0.8 * -lp[y] + 0.2 * -lp.mean()),
    (LossSpec(name="focal", gamma=2.0), lambda lp, y: (1 - lp[y].exp()) ** 2 * -lp[y]),
    (LossSpec(name="focal", gamma=0.0), lambda lp, y: -lp[y]),  # gamma 0 is cross-entropy
], ids=["token_ce", "label_smoothing", "focal", "focal-gamma-0"])
def test_each_built_in_equals_its_reference(spec, per_token):
    logits, labels = _batch()
    got = per_example_loss(logits, labels, losses.resolve(spec))
    torch.testing.assert_close(got, _reference(logits, labels, per_token))


def test_defaults_are_recorded_with_the_objective():
    assert losses.resolve(LossSpec(name="focal")).describe() == {"name": "focal", "params": {"gamma": 2.0},
                                                                  "kind": "built-in"}
    assert TrainingSpec(steps=1).loss.name == "token_ce"


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """An installed distribution (a dist-info and a module on sys.path) with a tgflow.losses entry point."""
    pkg = tmp_path / "scaled_ce_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import torch.nn.functional as F\n\n"
        "def make(scale=1.0):\n"
        "    return lambda logits, targets: scale * F.cross_entropy(logits, targets, ignore_index=-100,"
        " reduction='none')\n")
    info = tmp_path / "scaled_ce_plugin-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scaled-ce-plugin\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[tgflow.losses]\nscaled_ce = scaled_ce_plugin:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "scaled_ce"


def test_a_plug_in_is_found_used_and_recorded(plugin):
    spec = LossSpec(name=plugin, scale=3.0)
    objective = losses.resolve(spec)
    logits, labels = _batch()
    torch.testing.assert_close(per_example_loss(logits, labels, objective), 3 * per_example_loss(logits, labels))
    assert objective.describe() == {"name": "scaled_ce", "params": {"scale": 3.0}, "kind": "plug-in",
                                    "entry_point": "scaled_ce_plugin:make", "distribution": "scaled-ce-plugin",
                                    "version": "1.2.3"}
    with pytest.raises(ValueError, match="did you mean 'scaled_ce'"):
        LossSpec(name="scaled_cee")


@pytest.mark.parametrize("fields, words", [
    ({"name": "focall"}, "unknown loss 'focall'; did you mean 'focal'"),
    ({"name": "focal", "gamma": -1}, "gamma must be a number from 0 up to 10"),
    ({"name": "focal", "alpha": 0.25}, "focal takes gamma, not 'alpha'"),
    ({"name": "label_smoothing", "smoothing": 1.0}, "smoothing must be a number from 0 up to 1"),
    ({"name": "token_ce", "smoothing": 0.1}, "token_ce takes no parameters"),
    ({"name": "focal", "gamma": True}, "numbers or strings"),
])
def test_the_spec_refuses_unknown_objectives_and_bad_parameters(fields, words):
    with pytest.raises(ValueError, match=words):
        LossSpec(**fields)


def _train(tiny_model, tmp_path, loss: dict) -> dict:
    from transformers import AutoTokenizer

    from runners.learn import model as model_mod
    from runners.learn.train import add_lora, train
    from runners.spec import LoraSpec
    from runners.state.checkpoint import CheckpointStore
    from runners.state.keys import ephemeral

    tok = AutoTokenizer.from_pretrained(tiny_model)
    _, model = model_mod.load(tiny_model, model_mod.pick_device("auto"))
    model = add_lora(model, LoraSpec(r=4, alpha=8, target_modules=["q_proj", "v_proj"]), seed=0)
    g = torch.Generator().manual_seed(1)
    data = [Tokenized(ids, ids) for ids in (torch.randint(3, len(tok), (12,), generator=g).tolist() for _ in range(8))]
    spec = TrainingSpec(steps=4, batch_size=4, learning_rate=0.01, loss=LossSpec(**loss))
    train(model, tok, data, spec, "cpu", CheckpointStore(tmp_path / loss["name"], ephemeral("losses")), {"t": loss["name"]})
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_focal_and_label_smoothing_change_what_is_learned(tiny_model, tmp_path):
    base = _train(tiny_model, tmp_path, {"name": "token_ce"})
    again = _train(tiny_model, tmp_path / "again", {"name": "token_ce"})
    assert all(torch.equal(base[k], again[k]) for k in base)  # the comparison is deterministic
    for loss in ({"name": "focal", "gamma": 2.0}, {"name": "label_smoothing", "smoothing": 0.3}):
        other = _train(tiny_model, tmp_path, loss)
        assert max(float((other[k] - base[k]).abs().max()) for k in base) > 1e-5, loss


def test_a_round_trained_with_a_plug_in_records_it_in_the_evidence(workspace, plugin, capsys):
    import json

    from tests.runners.test_round import run
    from tgsp.package import open_package

    spec = workspace.spec(training={"steps": 6, "batch_size": 8, "learning_rate": 0.01, "seed": 3, "max_seq_len": 64,
                                    "checkpoint_every": 2, "loss": {"name": plugin, "scale": 2.0}})
    code, out, err = run(capsys, "peft", "run", "--spec", spec, "--json")
    assert code == 0, err
    with open_package(json.loads(out)["package"]) as p:
        training = next(e["data"] for e in p.evidence if e["type"] == "tgflow.training")
    assert training["loss"] == {"name": "scaled_ce", "params": {"scale": 2.0}, "kind": "plug-in",
                                "entry_point": "scaled_ce_plugin:make", "distribution": "scaled-ce-plugin",
                                "version": "1.2.3"}
