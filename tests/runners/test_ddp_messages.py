"""What rank 0 sends the other ranks: msgpack + safetensors, never pickle. Round trips exactly;
anything else (a pickle, random bytes, an unknown kind) is refused in one line."""

from __future__ import annotations

import pickle

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runners.distributed import messages as ddp_messages, world
from runners.distributed.messages import Job
from runners.learn.batches import Tokenized
from runners.learn.dp_sgd import DPConfig
from runners.state.checkpoint import Checkpoint
from tgsp.errors import InputError

torch = pytest.importorskip("torch")


def _job(with_checkpoint: bool) -> Job:
    g = torch.Generator().manual_seed(0)
    ckpt = Checkpoint(4, {"losses": [1.5, 1.25], "tokens": 99, "format": "tgflow-checkpoint/1"},
                      {"a": torch.randn(3, 2, generator=g)}, {"a.exp_avg": torch.randn(3, 2, generator=g)},
                      {"cpu": torch.Generator().manual_seed(1).get_state()}) if with_checkpoint else None
    return Job([Tokenized([1, 5, 7], [-100, 5, 7]), Tokenized([1, 2], [-100, 2])], {"steps": 6, "batch_size": 8},
               {"r": 4, "alpha": 8}, {"lora_A": torch.randn(4, 8, generator=g).to(torch.bfloat16)},
               DPConfig(1.0, 1.1, 0.25, 16), 12, {"route": "support"}, ckpt)


@pytest.mark.parametrize("with_checkpoint", [False, True])
def test_a_job_round_trips_exactly(with_checkpoint):
    job = _job(with_checkpoint)
    back = ddp_messages.decode(ddp_messages.encode_job(job))
    assert (back.data, back.training, back.lora, back.dp, back.limit, back.fingerprint) == \
        (job.data, job.training, job.lora, job.dp, job.limit, job.fingerprint)
    assert back.start["lora_A"].dtype == torch.bfloat16 and torch.equal(back.start["lora_A"], job.start["lora_A"])
    if with_checkpoint:
        assert (back.checkpoint.step, back.checkpoint.meta) == (4, job.checkpoint.meta)
        assert torch.equal(back.checkpoint.rng["cpu"], job.checkpoint.rng["cpu"])
    else:
        assert back.checkpoint is None


def test_codes_and_the_not_trained_message():
    assert ddp_messages.decode(ddp_messages.encode_code(75)) == 75
    assert ddp_messages.decode(ddp_messages.NOT_TRAINED) == "not-trained"
    state = torch.Generator().manual_seed(3).get_state()
    assert torch.equal(world.state_from_bytes(world.state_bytes(state)), state)  # World.share_generator


class _Boom:
    def __reduce__(self):
        return (pytest.fail, ("a pickle was executed",))


@pytest.mark.parametrize("raw", [pickle.dumps(_Boom()), msgpack.packb({"kind": "shell"}), msgpack.packb([1, 2]),
                                 msgpack.packb({"kind": "job", "data": "x"}), b""])
def test_anything_else_is_refused_and_nothing_is_unpickled(raw):
    with pytest.raises(InputError, match="cannot read"):
        ddp_messages.decode(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoder(raw):
    try:
        out = ddp_messages.decode(raw)
    except InputError:
        return
    assert isinstance(out, (int, str))


def _tampered(change) -> bytes:
    msg = msgpack.unpackb(ddp_messages.encode_job(_job(True)), raw=False)
    change(msg)
    return msgpack.packb(msg, use_bin_type=True)


def _float_rng(m):
    m["checkpoint"]["rng"] = ddp_messages._tensors({"cpu": torch.zeros(8)})


@pytest.mark.parametrize("raw", [
    msgpack.packb({"kind": "code", "code": True}), msgpack.packb({"kind": "code", "code": 2 ** 63}),
    msgpack.packb({"kind": "code", "code": -9}), msgpack.packb({"kind": "code", "code": 42}),
    msgpack.packb({"kind": "code", "code": 0, "extra": 1}), msgpack.packb({"kind": "not-trained", "x": 1}),
    _tampered(lambda m: m["data"][0].__setitem__(0, ["1", "5"])),  # token ids as strings
    _tampered(lambda m: m["data"][0].__setitem__(1, [-5, 5, 7])),  # a label that is no token and not -100
    _tampered(lambda m: m["data"][0].__setitem__(1, [5])),  # labels and ids of different lengths
    _tampered(lambda m: m.__setitem__("limit", -1)),
    _tampered(lambda m: m.__setitem__("limit", True)),
    _tampered(lambda m: m["dp"].__setitem__("noise_multiplier", float("nan"))),
    _tampered(lambda m: m["dp"].__setitem__("sample_rate", 2.0)),
    _tampered(lambda m: m["dp"].__setitem__("rogue", 1)),
    _tampered(lambda m: m["checkpoint"].__setitem__("step", "4")),
    _tampered(_float_rng),  # a generator state that is not bytes: never handed to set_state
    _tampered(lambda m: m.__setitem__("rogue", 1)),
], ids=lambda _: "")
def test_every_decoded_field_is_type_checked(raw):
    """Issue 26: exit codes of True, 2**63 or -9, string token ids, and any bytes for a generator state passed."""
    with pytest.raises(InputError, match="cannot read"):
        ddp_messages.decode(raw)


def test_a_generator_state_of_the_wrong_size_is_refused():
    class OneRank:
        main = False

        def broadcast_bytes(self, data):
            return b"\x00" * 16  # a CUDA generator's state, sent to a CPU rank

    with pytest.raises(InputError, match="does not fit"):
        world.World.share_generator(OneRank(), torch.Generator())
