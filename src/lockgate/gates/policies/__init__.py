"""The Rego sources shipped with lockgate: the default gate policy and its ``opa test``-style tests."""
