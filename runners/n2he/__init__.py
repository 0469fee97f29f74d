"""n2he: homomorphic secure aggregation with CKKS (TenSEAL). Work in progress (issue 13):
the parameter policy and the chunked encrypt / sum / decrypt core. Not wired into a round yet;
privacy.mode "n2he" is still refused by peft run and export."""
