"""OCI registries and image layouts: where packages and route indexes live outside a folder.

``refs`` parses ``oci://`` and ``oci-layout:`` references, ``auth`` finds credentials the way
the Docker and ORAS clients do, ``client`` speaks the OCI distribution API over httpx,
``layout`` reads and writes an OCI image layout, ``artifact`` builds and checks tgflow's
manifests, and ``transfer`` moves artifacts (with their referrers) between any two of them.
No torch. See docs/registry.md, docs/format.md §15 and docs/adr/0020-oci-registries.md.
"""
