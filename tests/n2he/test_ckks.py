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


def test_rounding_drops_the_ckks_error_from_what_is_released(keys):
    """The released sum is the plaintext sum on the release grid: the error's bits are gone
    (except where a value sits within the error of a grid boundary)."""
    secret, _, public = keys
    rng = np.random.default_rng(1)
    parties = [rng.standard_normal(4096) * 1e-2 for _ in range(8)]
    summed = ckks.add(public, (next(ckks.encrypt(public, x)) for x in parties))
    got = ckks.round_released(ckks.decrypt(secret, [summed], 4096))
    want = ckks.round_released(np.sum(parties, axis=0))
    step = ckks.DEFAULT.release_step
    assert np.all(np.abs(got / step - np.round(got / step)) < 1e-6)  # on the grid
    assert np.mean(got == want) > 0.97  # measured 98.9% for 8 parties
    assert np.abs(got - want).max() <= step * 1.0001
