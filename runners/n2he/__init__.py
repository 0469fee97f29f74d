"""n2he: homomorphic secure aggregation with CKKS (TenSEAL), its formats and math: the
parameter policy (ckks.py), HE keys in the keyring (context.py), the update vector's layout
(layout.py), a site's encrypted update body (site.py), the homomorphic sum and the he-sum
package (sum.py, given the round to record in) and the shared-key package (share.py). The key holder's round is runners/recipes/decrypt.py; the
privacy mode that encrypts a site's update is runners/privacy/modes.py (docs/n2he.md)."""
