"""Update compression: block-int8 error bounds, top-k error feedback, and a decoder that
refuses anything inconsistent (property-tested with hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from runners.fed.compress import Codec, CodecError, decode, encode

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
tensors = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=40), elements=finite)
codecs = st.builds(Codec, st.sampled_from(["int8-block", "none"]), st.sampled_from([16, 64, 256]),
                   st.one_of(st.none(), st.floats(0.01, 0.99)))


@settings(max_examples=150, deadline=None)
@given(tensors, st.sampled_from([16, 64, 256]))
def test_block_int8_error_is_at_most_half_a_step_of_its_block(x, block):
    codec = Codec("int8-block", block, None)
    parts, _ = encode(x, codec)
    y = decode(parts, codec)
    assert y.shape == x.shape and y.dtype == np.float32
    flat, err = x.reshape(-1), np.abs(y - x).reshape(-1)
    for b in range(0, len(flat), block):
        step = np.abs(flat[b:b + block]).max() / 127
        assert err[b:b + block].max() <= step / 2 * (1 + 1e-5) + 1e-30


@settings(max_examples=100, deadline=None)
@given(st.lists(hnp.arrays(np.float32, (64,), elements=finite), min_size=1, max_size=5), st.floats(0.05, 0.5))
def test_top_k_error_feedback_loses_nothing_over_rounds(rounds, topk):
    """What was sent over all rounds plus what is still carried is exactly what was meant to be sent."""
    codec = Codec("none", 256, topk)
    residual, sent = None, np.zeros(64, np.float64)
    for x in rounds:
        parts, residual = encode(x, codec, residual)
        sent += decode(parts, codec)
        assert int(np.unpackbits(parts["mask"]).sum()) == int(np.ceil(topk * 64))
    total = np.sum([r.astype(np.float64) for r in rounds], axis=0)
    assert np.allclose(sent + residual, total, atol=1e-3)


@settings(max_examples=100, deadline=None)
@given(tensors, codecs)
def test_round_trip_keeps_shape_and_the_largest_values(x, codec):
    parts, _ = encode(x, codec)
    y = decode(parts, codec)
    assert y.shape == x.shape
    if codec.topk is None and codec.quantize == "none":
        assert np.array_equal(y, x)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["shape", "q", "scale", "values", "mask", "idx"]),
                       hnp.arrays(st.sampled_from([np.int64, np.int8, np.uint8, np.float32, np.float64]),
                                  hnp.array_shapes(min_dims=0, max_dims=2, max_side=8)), max_size=5), codecs)
def test_the_decoder_refuses_garbage_with_codec_errors_only(parts, codec):
    try:
        y = decode(parts, codec)
    except CodecError:
        return
    assert y.dtype == np.float32 and np.isfinite(y).all()


def test_per_tensor_scale_would_lose_the_small_values_per_block_keeps_them():
    """Why blocks: one large value in a tensor sets its step; per block, it only sets its own block's."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(4096) * 1e-3).astype(np.float32)
    x[7] = 1.0
    one_scale = decode(encode(x, Codec("int8-block", 4096, None))[0], Codec("int8-block", 4096, None))
    blocks = decode(encode(x, Codec("int8-block", 256, None))[0], Codec("int8-block", 256, None))
    rel = lambda y: float(np.linalg.norm((y - x)[256:]) / np.linalg.norm(x[256:]))  # noqa: E731 - past the big block
    assert rel(one_scale) > 0.9 and rel(blocks) < 0.01


@pytest.mark.parametrize("bad", [
    {"shape": np.array([4], np.int64), "q": np.zeros(16, np.int8), "scale": np.array([np.nan], np.float32)},
    {"shape": np.array([40], np.int64), "q": np.zeros(16, np.int8), "scale": np.ones(1, np.float32)},
    {"shape": np.array([-1], np.int64), "q": np.zeros(16, np.int8), "scale": np.ones(1, np.float32)},
    {"shape": np.array([1 << 20, 1 << 20], np.int64), "q": np.zeros(16, np.int8), "scale": np.ones(1, np.float32)},
])
def test_inconsistent_parts_are_refused(bad):
    with pytest.raises(CodecError):
        decode(bad, Codec("int8-block", 16, None))
    with pytest.raises(CodecError):
        decode({**bad, "mask": np.full(1, 0xFF, np.uint8)}, Codec("int8-block", 16, 0.5))
