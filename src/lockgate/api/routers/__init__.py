"""One router per control-plane resource; each operation id is a key of ``security.permissions``."""
