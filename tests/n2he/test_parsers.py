"""Property tests of the n2he parsers: hostile HE public files, parameters and he sections
give a clear refusal (FormatError / InputError, or a reason string), never anything else."""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from runners.n2he import ckks, layout
from tgsp.errors import FormatError, InputError
from tgsp.he_store import HEPublic

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                    max_leaves=20)
GOOD_PARAMS = ckks.DEFAULT.to_dict()


@given(JSON)
@settings(max_examples=300, deadline=None)
def test_he_public_files_parse_or_refuse(obj):
    try:
        HEPublic.from_dict(obj)
    except FormatError:
        pass


@given(st.dictionaries(st.sampled_from(["type", "name", "kind", "version", "created", "params", "context_id",
                                        "context"]), JSON, max_size=8))
@settings(max_examples=300, deadline=None)
def test_he_public_files_with_the_right_keys_parse_or_refuse(obj):
    try:
        pub = HEPublic.from_dict({"type": "tgflow-he-public/1", **obj})
    except FormatError:
        return
    assert pub.context_id == obj["context_id"]  # only a matching id gets through


@given(JSON)
@settings(max_examples=300, deadline=None)
def test_parameters_parse_check_or_refuse(obj):
    try:
        p = ckks.Params.from_dict(obj)
    except InputError:
        return
    assert p.log_q <= ckks.MAX_LOG_Q_128[p.poly_modulus_degree]  # nothing weaker gets through


@given(st.dictionaries(st.sampled_from(["layout", "context", "params", "values", "ciphertexts", "weight",
                                        "max_update_norm", "custody"]), JSON, max_size=8), JSON)
@settings(max_examples=300, deadline=None)
def test_he_sections_fit_or_give_a_reason(he, examples):
    fed = {"he": he, "examples": examples}
    why = layout.he_mismatch(fed, "sha256:" + "0" * 64, ckks.DEFAULT, 6144)
    assert why is None or isinstance(why, str)
    if why is None:
        assert he["context"] == "sha256:" + "0" * 64 and he["values"] == 6144 and he["params"] == GOOD_PARAMS
        for weights in ("examples", "equal"):
            w = layout.he_weight(fed, weights)
            assert isinstance(w, str) or w == float(he["weight"])


def test_a_well_formed_section_fits():
    he = layout.he_section(ckks.DEFAULT, "sha256:" + "0" * 64, 6144, 7, 10.0, "key-holder")
    assert layout.he_mismatch({"he": json.loads(json.dumps(he))}, "sha256:" + "0" * 64, ckks.DEFAULT, 6144) is None
    assert layout.he_weight({"he": he, "examples": 7}, "examples") == 7.0
    assert "--weights examples" in layout.he_weight({"he": he, "examples": 7}, "equal")
