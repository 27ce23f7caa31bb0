"""Privacy and fidelity audit of synthetic faces (docs/DESIGN.md, Privacy contract)."""
