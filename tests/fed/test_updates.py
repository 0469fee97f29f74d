"""The aggregator's reading of an update's signed federation section: any JSON value gets a
reason or a clean acceptance, never an exception (property-tested)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from runners.fed import updates

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                           max_leaves=20)
WANT = {"format": updates.FORMAT, "route": "support", "round": "r1", "method": "exact", "base_model": {"sha256": "0" * 64},
        "start": {"package_id": None, "init": "fresh", "seed": 7, "adapter_sha256": "1" * 64},
        "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}, "modules_sha256": "2" * 64}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*updates.MATCHED, "examples", "compression", "x"]), json_values, max_size=10)
       | json_values)
def test_any_federation_section_gets_a_reason_or_passes(fed):
    why = updates._mismatch(fed, WANT)
    assert why is None or isinstance(why, str) and len(why) < 400
    if isinstance(fed, dict):
        codec = updates.codec_of(fed)
        assert codec is None or codec.quantize in ("int8-block", "none")
        for weights in ("examples", "equal"):
            w = updates.PLAIN.weight(fed, weights)
            assert isinstance(w, str) or w >= 1.0


def test_the_matching_section_passes_and_each_field_is_named_when_it_differs():
    assert updates._mismatch(dict(WANT), WANT) is None
    for key in updates.MATCHED:
        assert key.replace("_", " ") in updates._mismatch({**WANT, key: "other"}, WANT)
    assert updates.PLAIN.weight({}, "examples").startswith("it carries no public example count")
    assert updates.PLAIN.weight({"examples": None}, "examples").startswith("it carries no public example count")
    for bad in (True, 10 ** 13, -5, 0, 2.5, "12"):  # a count of the wrong kind is named as one (issue 26)
        assert updates.PLAIN.weight({"examples": bad}, "examples").startswith("its example count"), bad
    assert updates.PLAIN.weight({"examples": 12}, "examples") == 12.0
