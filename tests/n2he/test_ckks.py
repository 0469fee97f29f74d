"""The CKKS core: parameters below 128-bit are refused; a sum of encrypted vectors equals the
plaintext sum within 1e-6 relative error; the public context has no secret key."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tenseal")

from runners.n2he import ckks  # noqa: E402
from tgsp.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def keys():
    secret = ckks.new_secret_context()
    public = ckks.public_bytes(secret)
    return secret, public, ckks.load_public(public)


@pytest.mark.parametrize("params,needle", [
    (ckks.Params(8192, (60, 60, 60, 60), 40), "below 128-bit"),
    (ckks.Params(4096, (60, 60), 40), "below 128-bit"),
    (ckks.Params(16384, (60,) * 8, 40), "below 128-bit"),
    (ckks.Params(3000, (60, 40), 40), "not one of"),
    (ckks.Params(8192, (60,), 40), "special prime"),
])
def test_weak_or_broken_parameters_are_refused(params, needle):
    with pytest.raises(InputError, match=needle):
        params.check()


def test_the_default_is_128_bit_by_the_standard():
    ckks.DEFAULT.check()
    assert ckks.DEFAULT.log_q <= ckks.MAX_LOG_Q_128[ckks.DEFAULT.poly_modulus_degree]


def test_a_sum_of_eight_parties_equals_the_plaintext_sum(keys):
    secret, _, public = keys
    rng = np.random.default_rng(0)
    n = 10_000  # three chunks, the last one partial
    parties = [rng.standard_normal(n) * 1e-2 for _ in range(8)]
    encrypted = [list(ckks.encrypt(public, x)) for x in parties]
    assert all(len(e) == ckks.chunks_for(n) == 3 for e in encrypted)
    summed = [ckks.add(public, (e[k] for e in encrypted)) for k in range(3)]
    got = ckks.decrypt(secret, summed, n)
    want = np.sum(parties, axis=0)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-6
    assert len(encrypted[0][0]) / ckks.DEFAULT.slots <= 32.5  # bytes per parameter on the wire


def test_the_public_context_cannot_decrypt_and_a_secret_one_is_refused_as_public(keys):
    secret, public_bytes, public = keys
    assert not public.has_secret_key()
    ct = next(ckks.encrypt(public, np.ones(4)))
    with pytest.raises(Exception):
        ckks.decrypt(public, [ct], 4)
    with pytest.raises(InputError, match="holds a secret key"):
        ckks.load_public(secret.serialize(save_secret_key=True))
    assert ckks.context_id(public_bytes) != ckks.context_id(ckks.public_bytes(ckks.new_secret_context()))


def test_rounding_keeps_the_result_and_drops_the_low_bits():
    x = np.array([0.123456789, -1.5, 3.0e-9])
    r = ckks.round_released(x, bits=20)
    assert np.abs(r - x).max() <= 2.0 ** (0 - 20)
    assert np.all(np.abs(r / 2.0 ** -20 - np.round(r / 2.0 ** -20)) < 1e-9)
